"""Sequence loaders (S3-Rec files, interactions CSV/TSV/Parquet, synthetic), leave-one-out split, bad input."""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import numpy as np
import pytest

from leanrank.core.errors import DataError, LeanrankError
from leanrank.data.sequences import (
    InteractionColumns,
    from_sequences,
    load_interactions,
    load_s3rec,
    load_sequence_dataset,
)

BEAUTY_TXT = "1 1 2 3 4 5\n2 3 4 6\n3 6 5 4 2 1 3\n"
ATTRS = {"1": [1, 2], "3": [2], "6": [3, 1, 2]}
TITLES = ("item_id:token\ttitle:token\tcategories:token_seq\n1\tRed Nail Polish\t'Beauty', 'Nails'\n"
          "2\t\t'Beauty'\n6\tBB Cream\t'Beauty', 'Face'\n")


def write_s3rec(folder: Path, stem: str = "Beauty", txt: str = BEAUTY_TXT, attrs=ATTRS,
                titles: str | None = TITLES) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{stem}.txt").write_text(txt, encoding="utf-8")
    if attrs is not None:
        (folder / f"{stem}_item2attributes.json").write_text(json.dumps(attrs), encoding="utf-8")
    if titles is not None:
        (folder / f"{stem}.item").write_text(titles, encoding="utf-8")
    return folder


def test_s3rec_sequences_attributes_titles(tmp_path):
    ds = load_s3rec(write_s3rec(tmp_path), "Beauty")
    assert ds.name == "beauty" and ds.n_items == 6 and ds.user_ids == ["1", "2", "3"]
    assert [s.tolist() for s in ds.sequences] == [[1, 2, 3, 4, 5], [3, 4, 6], [6, 5, 4, 2, 1, 3]]
    assert all(s.dtype == np.int64 for s in ds.sequences)
    assert ds.item_attributes == [[], [1, 2], [], [2], [], [], [3, 1, 2]]
    assert ds.n_attributes == 4
    assert ds.titles == ["", "Red Nail Polish", "", "", "", "", "BB Cream"]
    assert ds.original_items([6, 1]) == ["6", "1"] and ds.report == {}
    assert ds.summary()["interactions"] == 14


def test_leave_one_out_split_contents(tmp_path):
    split = load_s3rec(write_s3rec(tmp_path), "Beauty").split()
    assert [t.tolist() for t in split.train] == [[1, 2, 3], [3], [6, 5, 4, 2]]
    assert split.valid_targets.tolist() == [4, 4, 1]
    assert split.test_targets.tolist() == [5, 6, 3]
    assert [h.tolist() for h in split.valid_histories()] == [[1, 2, 3], [3], [6, 5, 4, 2]]
    assert [h.tolist() for h in split.test_histories()] == [[1, 2, 3, 4], [3, 4], [6, 5, 4, 2, 1]]


def test_registry_names_find_the_s3rec_folders(tmp_path, monkeypatch):
    write_s3rec(tmp_path / "rec" / "amazon-beauty")
    write_s3rec(tmp_path / "rec" / "amazon-sports", stem="Sports_and_Outdoors", titles=None)
    beauty = load_sequence_dataset("beauty", tmp_path)
    sports = load_sequence_dataset("sports", tmp_path)
    assert beauty.name == "beauty" and beauty.titles is not None
    assert sports.name == "sports" and sports.titles is None and sports.n_items == 6
    monkeypatch.setenv("LEANRANK_DATA", str(tmp_path))
    assert load_sequence_dataset("beauty").n_items == 6
    monkeypatch.delenv("LEANRANK_DATA")
    with pytest.raises(LeanrankError, match="--data-dir"):
        load_sequence_dataset("beauty")
    with pytest.raises(LeanrankError, match="unknown dataset 'nope'"):
        load_sequence_dataset("nope", tmp_path)


@pytest.mark.parametrize("txt, line, words", [
    ("1 1 2 3\n2 1 2 3\n7\n", 3, "malformed line"),
    ("1 1 2 3\n2 1 x 3\n", 2, "'x' is not an integer"),
    ("1 1 2 3\n\n3 1 0 2\n", 3, "item ids must be >= 1"),
])
def test_bad_sequence_lines_name_file_and_line(tmp_path, txt, line, words):
    write_s3rec(tmp_path, txt=txt, attrs=None, titles=None)
    with pytest.raises(DataError) as info:
        load_s3rec(tmp_path, "Beauty")
    message = str(info.value)
    assert f"Beauty.txt:{line}: " in message and words in message and "\n" not in message


def test_short_users_and_unknown_attribute_items_warn_or_fail_when_strict(tmp_path):
    write_s3rec(tmp_path, txt="1 1 2 3\n2 1 2\n3 2 3 1\n4 3\n", attrs={"1": [1], "99": [2]}, titles=None)
    with pytest.warns(UserWarning, match=r"short_users_dropped=2 .*Beauty.txt:2.*attributes_of_unknown_items=1"):
        ds = load_s3rec(tmp_path, "Beauty")
    assert ds.user_ids == ["1", "3"]
    assert ds.report == {"short_users_dropped": 2, "attributes_of_unknown_items": 1}
    with pytest.raises(DataError, match=r"Beauty.txt:2: user 2 has 2 interactions \(< 3\) \(strict\)"):
        load_s3rec(tmp_path, "Beauty", strict=True)
    write_s3rec(tmp_path, txt="1 1 2 3\n", attrs={"1": [1], "99": [2]}, titles=None)
    with pytest.raises(DataError, match="item 99 is not in the sequences"):
        load_s3rec(tmp_path, "Beauty", strict=True)


def test_bad_side_files_are_errors(tmp_path):
    write_s3rec(tmp_path, attrs=None, titles="item_id:token\ttitle:token\n1\tok\nabc\tbad\n")
    with pytest.raises(DataError, match=r"Beauty.item:3: item id 'abc' is not an integer"):
        load_s3rec(tmp_path, "Beauty")
    write_s3rec(tmp_path, titles=None)
    (tmp_path / "Beauty_item2attributes.json").write_text('{"1": [1, "a"]}', encoding="utf-8")
    with pytest.raises(DataError, match="attributes must be a list of integer ids"):
        load_s3rec(tmp_path, "Beauty")
    (tmp_path / "Beauty_item2attributes.json").write_text('{"1": [1,', encoding="utf-8")
    with pytest.raises(DataError, match="invalid JSON"):
        load_s3rec(tmp_path, "Beauty")
    with pytest.raises(DataError, match="file not found"):
        load_s3rec(tmp_path, "Nope")


def test_interactions_sorted_by_time_reindexed_and_mapped_back(tmp_path):
    path = tmp_path / "events.csv"
    path.write_text("uid,sku,ts,w\n"
                    "alice,X,30,1\nbob,Y,5,2\nalice,Y,10,1\nalice,Z,2023-01-01T00:00:00,1\n"
                    "bob,Z,1,1\nbob,X,7,0.5\nalice,Q,20,1\n", encoding="utf-8")
    cols = InteractionColumns(user="uid", item="sku", timestamp="ts", weight="w")
    ds = load_interactions(path, cols)
    assert ds.user_ids == ["alice", "bob"] and ds.n_items == 4
    # alice: Y(10) Q(20) X(30) Z(2023 as epoch seconds); bob: Z(1) Y(5) X(7)
    assert ds.original_items(ds.sequences[0]) == ["Y", "Q", "X", "Z"]
    assert ds.original_items(ds.sequences[1]) == ["Z", "Y", "X"]
    assert ds.item_ids[0] == "" and sorted(ds.item_ids[1:]) == ["Q", "X", "Y", "Z"]
    assert ds.weights[1].tolist() == [1.0, 2.0, 0.5]


def test_interactions_k_core_and_errors(tmp_path):
    rows = ["user,item,timestamp"] + [f"u{u},i{i},{i}" for u in range(4) for i in range(4)] + [
        "u9,i0,1", "u9,i1,2", "u9,rare,3", "u8,i0,1"]
    (tmp_path / "a.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    with pytest.warns(UserWarning, match="short_users_dropped=1"):
        loose = load_interactions(tmp_path / "a.csv")
    assert "rare" in loose.item_ids and len(loose.sequences) == 5
    core = load_interactions(tmp_path / "a.csv", k_core=3)
    assert "rare" not in core.item_ids and core.user_ids == ["u0", "u1", "u2", "u3"]
    assert core.report == {"k_core_users_dropped": 2}
    (tmp_path / "b.tsv").write_text("user\titem\ttimestamp\nu1\ti1\t3\nu1\ti2\tyesterday\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"b.tsv:3: timestamp 'yesterday' is neither"):
        load_interactions(tmp_path / "b.tsv")
    (tmp_path / "c.csv").write_text("user,item\nu1,i1\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"c.csv:1: missing column\(s\) \['timestamp'\]"):
        load_interactions(tmp_path / "c.csv")
    (tmp_path / "d.csv").write_text("user,item,timestamp\nu1,i1,1\nu1,i2\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"d.csv:3: malformed line"):
        load_interactions(tmp_path / "d.csv")


def test_parquet_interactions_or_a_clear_error(tmp_path):
    import pandas as pd

    path = tmp_path / "e.parquet"
    df = pd.DataFrame({"user": ["a"] * 3 + ["b"] * 3, "item": [3, 1, 2, 1, 2, 3], "timestamp": [3, 1, 2, 1, 2, 3]})
    try:
        df.to_parquet(path)
    except ImportError:  # no Parquet engine installed
        path.write_bytes(b"PAR1")
        with pytest.raises(LeanrankError, match="pip install pyarrow"):
            load_interactions(path)
        return
    ds = load_interactions(path)
    assert ds.original_items(ds.sequences[0]) == ["1", "2", "3"] and ds.user_ids == ["a", "b"]
    path.write_bytes(b"PAR1 not really")
    with pytest.raises(DataError, match="e.parquet: cannot read Parquet"):
        load_interactions(path)


def test_from_sequences_and_synthetic():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ds = from_sequences([["a", "b", "c"], ["c", "a", "d"]], item_attributes={"a": ["red"], "d": ["red", "big"]},
                            titles={"a": "Apple"})
    assert ds.item_attributes == [[], [1], [], [], [1, 2]] and ds.titles == ["", "Apple", "", "", ""]
    with pytest.raises(LeanrankError, match="user 1 has 2 interactions"):
        from_sequences([["a", "b", "c"], ["a", "b"]], strict=True)
    from leanrank.data.synthetic import make_catalog

    syn = load_sequence_dataset("synthetic")
    sessions = make_catalog().sessions
    assert len(syn.sequences) == len(sessions) == 1000
    assert syn.original_items(syn.sequences[7]) == sessions[7]
    assert syn.n_attributes > 10 and syn.titles is not None and all(syn.item_attributes[1:])


REAL = Path(os.environ.get("LEANRANK_DATA") or Path(__file__).resolve().parents[2] / ".." / "shared" / "data")


@pytest.mark.slow
@pytest.mark.parametrize("name, users, items, interactions, attributes", [
    ("beauty", 22_363, 12_101, 198_502, 637), ("sports", 35_598, 18_357, 296_337, 2_277)])
def test_real_s3rec_counts(name, users, items, interactions, attributes):
    if not (REAL / "rec").is_dir():
        pytest.skip(f"real recommendation data not found under {REAL} (set LEANRANK_DATA)")
    ds = load_sequence_dataset(name, REAL, strict=True)
    s = ds.summary()
    assert (s["users"], s["items"], s["interactions"], s["attributes"] - 1) == (users, items, interactions, attributes)
    assert (ds.titles is not None) == (name == "beauty")
