"""atomic_dir: a folder is replaced whole on success and left untouched on failure."""

import pytest

from leanrank.core.io import atomic_dir


def test_atomic_dir_replaces_on_success_and_keeps_the_old_folder_on_failure(tmp_path):
    target = tmp_path / "model"
    with atomic_dir(target) as tmp:
        (tmp / "a.txt").write_text("first")
    assert (target / "a.txt").read_text() == "first"

    with pytest.raises(RuntimeError), atomic_dir(target) as tmp:
        (tmp / "a.txt").write_text("half-written")
        raise RuntimeError("killed mid-save")
    assert (target / "a.txt").read_text() == "first"              # untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]  # no temp or old folder left

    (tmp_path / ".model.old").mkdir()                               # left by a save killed earlier
    with atomic_dir(target) as tmp:
        (tmp / "b.txt").write_text("second")
    assert sorted(p.name for p in target.iterdir()) == ["b.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]
