"""Search relevance loaders, splits and the dataset registry, on tiny fixture files written here."""

from __future__ import annotations

import csv
import json
import zipfile
from pathlib import Path

import pytest

from leanrank.core.errors import DataError, LeanrankError
from leanrank.data.registry import DATA_ENV, load_search_dataset, resolve_data_dir
from leanrank.data.search import (
    HOMEDEPOT_LABELS,
    Columns,
    Judgment,
    LabelMapping,
    SearchDataset,
    load_homedepot,
    load_relevance,
    normalize_query,
    split_of,
)

# Home Depot layout: every field quoted in the header, titles quoted, ISO-8859-1 ("é" is one byte).
HD_HEADER = '"id","product_uid","product_title","search_term","relevance"\n'
HD_ROWS = [
    '2,100001,"Simpson Strong-Tie 12-Gauge Angle","angle bracket",3\n',
    '3,100001,"Simpson Strong-Tie 12-Gauge Angle","l bracket",2.5\n',
    '9,100002,"BEHR Premium Textured DeckOver 1-gal. #SC-141 Tugboat","deck over",2.33\n',
    '16,100005,"Delta Vero 1-Handle Shower Faucet Trim Kit in Chrome (Valve Not Included)","rain shower head",2\n',
    '17,100005,"Delta Vero 1-Handle Shower Faucet Trim Kit in Chrome (Valve Not Included)","shower only faucet",1\n',
    '18,100006,"Whirlpool 1.9 cu. ft. Over the Range Convertible Microwave in Stainless, Café","microwave",2.67\n',
    '20,100006,"Whirlpool 1.9 cu. ft. Over the Range Convertible Microwave in Stainless, Café","Angle  Bracket",1.33\n',
]
CUSTOM = Columns(query="q", product_id="pid", title="name", label="grade")
ESCI_LABELS = LabelMapping(label_min=0, label_max=3, relevant_min_label=2,
                           names={"E": 3, "S": 2, "C": 1, "I": 0})
ESCI_COLUMNS = Columns(title="product_title", label="esci_label")


def write_homedepot(folder: Path, rows: list[str] = HD_ROWS, header: str = HD_HEADER) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "train.csv.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("train.csv", (header + "".join(rows)).encode("iso-8859-1"))
    return path


def write_csv(path: Path, header: list[str], rows: list[list], delimiter: str = ",") -> Path:
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh, delimiter=delimiter)
        w.writerow(header)
        w.writerows(rows)
    return path


GENERIC_ROWS = [["drill", "p1", "Cordless Drill", 3], ["drill", "p2", "Drill Bit Set", 1.67],
                ["rug", "p3", "Area Rug, 5 ft. x 7 ft.", 2.33]]


def assert_where(exc: pytest.ExceptionInfo, path: Path, line: int | None) -> None:
    msg = str(exc.value)
    assert str(path) in msg and exc.value.path == str(path)
    if line is not None:
        assert f"{path}:{line}:" in msg and exc.value.line == line


# --------------------------------------------------------------------------- good files


def test_homedepot_zip_latin1(tmp_path):
    path = write_homedepot(tmp_path)
    ds = load_homedepot(path)
    assert ds.name == "homedepot"
    assert len(ds.judgments) == 7 and len(ds.titles) == 4
    assert ds.titles["100006"].endswith("Stainless, Café")  # decoded from ISO-8859-1
    assert "Angle Bracket" in ds.queries()  # whitespace collapsed, case kept
    assert load_homedepot(tmp_path).judgments == ds.judgments  # the folder works too
    assert ds.summary()["pairs"] == 7 and ds.report == {}


def test_homedepot_plain_csv_in_folder(tmp_path):
    (tmp_path / "train.csv").write_bytes((HD_HEADER + "".join(HD_ROWS)).encode("iso-8859-1"))
    assert len(load_homedepot(tmp_path).judgments) == 7


def test_homedepot_folder_without_file(tmp_path):
    with pytest.raises(DataError, match="no train.csv.zip or train.csv") as exc:
        load_homedepot(tmp_path)
    assert_where(exc, tmp_path, None)


def test_gains_and_relevance(tmp_path):
    ds = load_homedepot(write_homedepot(tmp_path))
    for j in ds.judgments:
        assert j.gain == pytest.approx(j.label - 1)
    rel = {(j.query, j.label): ds.is_relevant(j) for j in ds.judgments}
    assert rel[("deck over", 2.33)] and rel[("microwave", 2.67)] and rel[("angle bracket", 3.0)]
    assert not rel[("rain shower head", 2.0)] and not rel[("Angle Bracket", 1.33)]
    assert not ds.is_relevant(Judgment("q", "p", 2.32, 1.32))
    assert HOMEDEPOT_LABELS.describe()["relevant_min_label"] == 2.33


@pytest.mark.parametrize("fmt", ["csv", "tsv"])
def test_generic_delimited_custom_columns(tmp_path, fmt):
    path = write_csv(tmp_path / f"rel.{fmt}", ["pid", "q", "grade", "name"],
                     [[r[1], r[0], r[3], r[2]] for r in GENERIC_ROWS], "\t" if fmt == "tsv" else ",")
    ds = load_relevance(path, columns=CUSTOM)
    assert ds.name == "rel" and ds.queries() == ["drill", "rug"]
    assert ds.titles["p3"] == "Area Rug, 5 ft. x 7 ft."
    assert [j.label for j in ds.judgments] == [3.0, 1.67, 2.33]


def test_generic_jsonl_custom_columns(tmp_path):
    path = tmp_path / "rel.jsonl"
    path.write_text("\n".join(json.dumps({"q": q, "pid": p, "name": t, "grade": g}) for q, p, t, g in GENERIC_ROWS)
                    + "\n\n", encoding="utf-8")
    ds = load_relevance(path, columns=CUSTOM)
    assert len(ds.judgments) == 3 and ds.titles["p1"] == "Cordless Drill"


def test_jsonl_keeps_unicode_line_separators_inside_strings(tmp_path):
    # U+2028 and U+0085 are legal unescaped in JSON strings; only "\n" ends a JSONL record
    rows = [{"query": "lamp", "product_id": "p1", "title": "Desk\u2028Lamp\x85Shade", "label": 2},
            {"query": "lamp", "product_id": "p2", "title": "Floor Lamp", "label": "x"}]
    path = tmp_path / "u.jsonl"
    path.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows), encoding="utf-8")
    with pytest.raises(DataError, match="not a number") as exc:
        load_relevance(path)
    assert_where(exc, path, 2)
    path.write_text(json.dumps(rows[0], ensure_ascii=False), encoding="utf-8")
    assert load_relevance(path).titles["p1"] == "Desk\u2028Lamp\x85Shade"


def test_jsonl_inside_zip_is_read_as_jsonl(tmp_path):
    path = tmp_path / "rel.zip"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("rel.jsonl", json.dumps({"query": "q", "product_id": "p", "title": "t", "label": 3}))
    assert len(load_relevance(path).judgments) == 1


def test_utf8_bom_is_ignored(tmp_path):
    path = write_csv(tmp_path / "bom.csv", ["query", "product_id", "title", "label"], GENERIC_ROWS)
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())
    assert len(load_relevance(path).judgments) == 3


def test_esci_string_labels(tmp_path):
    rows = [["usb c cable", "B01", "USB-C Cable 6ft", "E"], ["usb c cable", "B02", "USB-C Charger", "S"],
            ["usb c cable", "B03", "Cable Organizer", "C"], ["usb c cable", "B04", "Garden Hose", "I"]]
    path = write_csv(tmp_path / "esci.csv", ["query", "product_id", "product_title", "esci_label"], rows)
    ds = load_relevance(path, columns=ESCI_COLUMNS, labels=ESCI_LABELS)
    assert [(j.label, j.gain) for j in ds.judgments] == [(3, 3), (2, 2), (1, 1), (0, 0)]
    assert [ds.is_relevant(j) for j in ds.judgments] == [True, True, False, False]
    assert ds.summary()["label_mapping"]["names"] == {"E": 3, "S": 2, "C": 1, "I": 0}
    write_csv(path, ["query", "product_id", "product_title", "esci_label"], [*rows, ["q", "B05", "t", "X"]])
    with pytest.raises(DataError, match=r"label 'X' is not a number or one of \['C', 'E', 'I', 'S'\]") as exc:
        load_relevance(path, columns=ESCI_COLUMNS, labels=ESCI_LABELS)
    assert_where(exc, path, 6)


def test_duplicate_pairs_merged_by_mean(tmp_path):
    rows = [*HD_ROWS, '21,100001,"Simpson Strong-Tie 12-Gauge Angle","angle bracket",2\n',
            '22,100001,"Simpson Strong-Tie 12-Gauge Angle","angle bracket",1\n']
    ds = load_homedepot(write_homedepot(tmp_path, rows))
    assert ds.report["duplicate_pairs_merged_by_mean"] == 2
    merged = [j for j in ds.judgments if (j.query, j.product_id) == ("angle bracket", "100001")]
    assert len(merged) == 1 and merged[0].label == pytest.approx(2.0) and merged[0].gain == pytest.approx(1.0)
    assert len(ds.judgments) == 7 and ds.summary()["load_report"] == ds.report


# --------------------------------------------------------------------------- bad files


def test_missing_file(tmp_path):
    with pytest.raises(DataError, match="file not found") as exc:
        load_relevance(tmp_path / "nope.csv")
    assert_where(exc, tmp_path / "nope.csv", None)


def test_wrong_encoding_names_line(tmp_path):
    path = tmp_path / "latin.csv"
    path.write_bytes(("query,product_id,title,label\nrug,p1,Rug,2\ndrill,p2,Perceuse sans fil é,3\n")
                     .encode("iso-8859-1"))
    with pytest.raises(DataError, match="not valid utf-8 .*0xe9") as exc:
        load_relevance(path, encoding="utf-8")
    assert_where(exc, path, 3)
    assert load_relevance(path, encoding="iso-8859-1").titles["p2"].endswith("é")


def test_wrong_encoding_inside_zip(tmp_path):
    path = write_homedepot(tmp_path)
    with pytest.raises(DataError, match="not valid utf-8") as exc:
        load_relevance(path, columns=Columns(query="search_term", product_id="product_uid",
                                             title="product_title", label="relevance"))
    assert_where(exc, path, 7)  # the first "é" is on line 7 of train.csv


def test_renamed_column_lists_header(tmp_path):
    header = HD_HEADER.replace('"search_term"', '"query_text"')
    path = write_homedepot(tmp_path, header=header)
    with pytest.raises(DataError, match=r"missing column\(s\) \['search_term'\]") as exc:
        load_homedepot(path)
    assert "header has ['id', 'product_uid', 'product_title', 'query_text', 'relevance']" in str(exc.value)
    assert_where(exc, path, 1)


def test_missing_field_in_jsonl(tmp_path):
    path = tmp_path / "rel.jsonl"
    path.write_text('{"query": "a", "product_id": "p", "title": "t", "label": 2}\n'
                    '{"query": "b", "product_id": "p", "label": 2}\n', encoding="utf-8")
    with pytest.raises(DataError, match="missing field 'title'") as exc:
        load_relevance(path)
    assert_where(exc, path, 2)


def test_empty_query(tmp_path):
    path = write_homedepot(tmp_path, [*HD_ROWS[:3], '30,100009,"Hammer","   ",2\n'])
    with pytest.raises(DataError, match="empty query") as exc:
        load_homedepot(path)
    assert_where(exc, path, 5)


def test_nan_title(tmp_path):
    path = write_homedepot(tmp_path, [*HD_ROWS[:2], "31,100010,nan,hammer,2\n"])
    with pytest.raises(DataError, match="empty title") as exc:
        load_homedepot(path)
    assert_where(exc, path, 4)


def test_short_row_is_missing_value(tmp_path):
    path = write_homedepot(tmp_path, [*HD_ROWS[:1], "32,100011\n"])
    with pytest.raises(DataError, match="missing query") as exc:
        load_homedepot(path)
    assert_where(exc, path, 3)


@pytest.mark.parametrize("label", ["4", "0.5", "-1", "nan"])
def test_label_out_of_range(tmp_path, label):
    path = write_homedepot(tmp_path, [*HD_ROWS[:2], f'33,100012,"Hammer","hammer",{label}\n'])
    with pytest.raises(DataError, match=r"outside \[1, 3\]") as exc:
        load_homedepot(path)
    assert_where(exc, path, 4)


def test_non_numeric_label(tmp_path):
    path = write_csv(tmp_path / "rel.tsv", ["q", "pid", "name", "grade"], [*GENERIC_ROWS, ["saw", "p9", "Saw", "high"]],
                     delimiter="\t")
    with pytest.raises(DataError, match="label 'high' is not a number") as exc:
        load_relevance(path, columns=CUSTOM)
    assert_where(exc, path, 5)


def test_invalid_json_line(tmp_path):
    path = tmp_path / "rel.jsonl"
    path.write_text('{"query": "a", "product_id": "p", "title": "t", "label": 2}\n\n'
                    '{"query": "b", "product_id": "p", "title": "t", "label": 2\n', encoding="utf-8")
    with pytest.raises(DataError, match="invalid JSON") as exc:
        load_relevance(path)
    assert_where(exc, path, 3)


def test_jsonl_line_not_an_object(tmp_path):
    path = tmp_path / "rel.jsonl"
    path.write_text('["a", "p", "t", 2]\n', encoding="utf-8")
    with pytest.raises(DataError, match="must be an object") as exc:
        load_relevance(path)
    assert_where(exc, path, 1)


def test_oversized_field_is_a_data_error(tmp_path):
    path = write_csv(tmp_path / "big.csv", ["query", "product_id", "title", "label"],
                     [["q", "p1", "t", 2], ["q", "p2", "x" * (csv.field_size_limit() + 10), 2]])
    with pytest.raises(DataError, match="malformed CSV: field larger than field limit") as exc:
        load_relevance(path)
    assert_where(exc, path, 3)


def test_header_only_file(tmp_path):
    path = write_csv(tmp_path / "empty.csv", ["query", "product_id", "title", "label"], [])
    with pytest.raises(DataError, match="no judgments found") as exc:
        load_relevance(path)
    assert_where(exc, path, None)


def test_zip_with_several_members(tmp_path):
    path = tmp_path / "two.zip"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("a.csv", "x")
        zf.writestr("b.csv", "y")
    with pytest.raises(DataError, match="name the member") as exc:
        load_relevance(path)
    assert_where(exc, path, None)


# --------------------------------------------------------------------------- splits


def make_dataset(queries: list[str]) -> SearchDataset:
    judgments = [Judgment(q, f"p{i % 50}", 2.0, 1.0) for i, q in enumerate(queries)]
    return SearchDataset("toy", {f"p{i}": f"title {i}" for i in range(50)}, judgments, HOMEDEPOT_LABELS)


@pytest.fixture(scope="module")
def big():
    return make_dataset([f"query number {i}" for i in range(2000)])


def test_split_is_deterministic(big):
    a, b = big.split(), make_dataset(list(reversed(big.queries()))).split()
    for s in ("train", "valid", "test"):
        assert set(a[s].queries()) == set(b[s].queries())
        assert a[s].queries() == big.split()[s].queries()
    assert split_of("cordless drill") == split_of("cordless drill")
    assert big.split(salt="other")["test"].queries() != a["test"].queries()


def test_split_ratios_approximately_respected(big):
    for ratios in [(0.8, 0.1, 0.1), (0.6, 0.2, 0.2)]:
        parts = big.split(ratios)
        for s, r in zip(("train", "valid", "test"), ratios, strict=True):
            assert abs(len(parts[s].queries()) / 2000 - r) < 0.035, (ratios, s)
    assert len(big.split((1.0, 0.0, 0.0))["train"].queries()) == 2000


def test_no_query_in_two_splits(big):
    parts = big.split()
    sets = [set(parts[s].queries()) for s in ("train", "valid", "test")]
    assert sum(len(s) for s in sets) == 2000 and set.union(*sets) == set(big.queries())
    assert not (sets[0] & sets[1] or sets[0] & sets[2] or sets[1] & sets[2])
    assert sum(len(parts[s].judgments) for s in parts) == len(big.judgments)
    assert parts["test"].titles is big.titles  # the catalog is shared, not split


def test_case_and_whitespace_variants_share_a_split():
    bases = [f"Cordless Drill {i}" for i in range(200)]
    variants = [v for b in bases for v in (b, b.upper(), f"  {b.lower()}  ", b.replace(" ", "\t  "))]
    ds = make_dataset(variants)
    parts = ds.split((0.4, 0.3, 0.3))
    where = {q: s for s, part in parts.items() for q in part.queries()}
    for b in bases:
        assert len({where[v] for v in (b, b.upper(), f"  {b.lower()}  ", b.replace(" ", "\t  "))}) == 1
    assert len(set(where.values())) == 3
    assert normalize_query("  Cordless\t DRILL ") == "cordless drill"


@pytest.mark.parametrize("ratios", [(0.5, 0.5, 0.5), (0.9, 0.1), (1.2, -0.1, -0.1), (0.8, 0.1, 0.0)])
def test_bad_ratios(big, ratios):
    with pytest.raises(DataError, match="split ratios"):
        big.split(ratios)


# --------------------------------------------------------------------------- registry


def test_registry_unknown_dataset_lists_choices():
    with pytest.raises(LeanrankError, match="unknown dataset 'nosuch'; choose one of synthetic, homedepot"):
        load_search_dataset("nosuch")


def test_registry_missing_data_dir(monkeypatch, tmp_path):
    monkeypatch.delenv(DATA_ENV, raising=False)
    with pytest.raises(LeanrankError, match=f"--data-dir DIR or set {DATA_ENV}"):
        load_search_dataset("homedepot")
    with pytest.raises(LeanrankError, match="data folder not found"):
        load_search_dataset("homedepot", tmp_path / "absent")
    with pytest.raises(DataError, match="file not found"):  # the folder exists, the dataset not
        load_search_dataset("homedepot", tmp_path)


def test_registry_env_and_homedepot(monkeypatch, tmp_path):
    write_homedepot(tmp_path / "search" / "homedepot")
    monkeypatch.setenv(DATA_ENV, str(tmp_path))
    assert resolve_data_dir(None) == tmp_path
    assert len(load_search_dataset("homedepot").judgments) == 7
    monkeypatch.delenv(DATA_ENV)
    assert len(load_search_dataset("homedepot", tmp_path).judgments) == 7


def test_registry_file_path(tmp_path):
    path = write_csv(tmp_path / "rel.csv", ["query", "product_id", "title", "label"], GENERIC_ROWS)
    assert len(load_search_dataset(str(path)).judgments) == 3


def test_registry_synthetic_loads():
    ds = load_search_dataset("synthetic")
    assert ds.name == "synthetic" and len(ds.queries()) > 100 and len(ds.titles) > len(ds.queries())
    assert ds.labels == HOMEDEPOT_LABELS
    assert all(ds.labels.label_min <= j.label <= ds.labels.label_max for j in ds.judgments)
