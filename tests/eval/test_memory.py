"""Peak RSS is measured in a fresh process and is not inherited from a big parent."""

import numpy as np

from leanrank.eval.memory import peak_rss_mb


def test_peak_rss_of_child_not_inflated_by_parent(tiny_cross_encoder, tmp_path):
    folder = tiny_cross_encoder().save(tmp_path / "m")
    ballast = np.ones(150_000_000)          # ~1.2 GB in this process
    mb = peak_rss_mb(folder, threads=1)
    assert 100 < mb < ballast.nbytes / 1e6
