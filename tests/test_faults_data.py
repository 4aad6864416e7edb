"""Fault injection for the FERPlus and RAF-DB readers: each bad input is built in tmp_path and must be a
DataError (and, where ``fer-study data counts`` reads that part, exit code 2) naming file and row.

``data counts`` loads no pixels, so image faults are checked on the loaders only.
"""

from __future__ import annotations

import csv
import os
import re
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFile

from fer_study.cli import main
from fer_study.data.ferplus import (
    DROP_REASONS,
    SPLIT_FOLDERS,
    check_row_alignment,
    ferplus_counts,
    load_ferplus,
    read_fer2013new,
)
from fer_study.data.rafdb import load_rafdb
from fer_study.errors import DataError

# ---- tiny layouts ----------------------------------------------------------------------------
#: Votes of the tiny folder layout: every row keeps a clear majority (nothing dropped).
VOTES = [
    [10, 0, 0, 0, 0, 0, 0, 0, 0, 0],
    [0, 9, 1, 0, 0, 0, 0, 0, 0, 0],
    [0, 0, 8, 2, 0, 0, 0, 0, 0, 0],
    [0, 0, 0, 7, 3, 0, 0, 0, 0, 0],
    [2, 0, 0, 0, 8, 0, 0, 0, 0, 0],
]


def _grey(seed: int, size: int = 48) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (size, size), dtype=np.uint8)


def _write_csv(path: Path, rows: list[list]) -> None:
    with path.open("w", newline="") as f:
        csv.writer(f).writerows(rows)


def _read_csv(path: Path) -> list[list[str]]:
    with path.open(newline="") as f:
        return list(csv.reader(f))


def ferplus_folders(root: Path, votes: dict[str, list[list[int]]] | None = None) -> Path:
    """FER2013Train/Valid/Test: grey 48x48 PNGs ``fer0000000.png``... and label.csv (row i+1: image i)."""
    for split, folder in SPLIT_FOLDERS.items():
        d = root / folder
        d.mkdir()
        rows = []
        for i, v in enumerate((votes or {}).get(split, VOTES)):
            name = f"fer{i:07d}.png"
            Image.fromarray(_grey(i)).save(d / name)
            rows.append([name, "(0, 0, 48, 48)", *v])
        _write_csv(d / "label.csv", rows)
    return root


#: Usage of the tiny csv layout's 12 data rows; data row 4 is a not-a-face row with an empty name.
CSV_USAGE = ["Training"] * 6 + ["PublicTest"] * 3 + ["PrivateTest"] * 3
NF_ROW = 4


def ferplus_csv(root: Path) -> Path:
    """fer2013.csv + fer2013new.csv, 12 aligned rows named ``fer<data row>.png`` (one NF row, no name)."""
    old, new = [["emotion", "pixels", "Usage"]], [["Usage", "Image name", "neutral", "happiness",
                                                   "surprise", "sadness", "anger", "disgust", "fear",
                                                   "contempt", "unknown", "NF"]]
    for i, usage in enumerate(CSV_USAGE):
        old.append([str(i % 7), " ".join(map(str, _grey(i).ravel())), usage])
        if i == NF_ROW:
            new.append([usage, "", *([0] * 9 + [10])])
        else:
            new.append([usage, f"fer{i:07d}.png", *VOTES[i % len(VOTES)]])
    _write_csv(root / "fer2013.csv", old)
    _write_csv(root / "fer2013new.csv", new)
    return root


RAF_LABELS = ["train_00001.jpg 5", "train_00002.jpg 4", "train_00003.jpg 7", "test_00001.jpg 1",
              "test_00002.jpg 4"]


def rafdb_official(root: Path) -> Path:
    """EmoLabel/list_patition_label.txt (5 rows) and 100x100 RGB Image/aligned/*_aligned.jpg."""
    (root / "EmoLabel").mkdir()
    (root / "Image" / "aligned").mkdir(parents=True)
    (root / "EmoLabel" / "list_patition_label.txt").write_text("\n".join(RAF_LABELS) + "\n")
    for i, line in enumerate(RAF_LABELS):
        stem = Path(line.split()[0]).stem
        rgb = np.random.default_rng(i).integers(0, 256, (100, 100, 3), dtype=np.uint8)
        Image.fromarray(rgb).save(root / "Image" / "aligned" / f"{stem}_aligned.jpg", quality=90)
    return root


# ---- faults ----------------------------------------------------------------------------------
def _truncate(path: Path, keep: float | int) -> None:
    data = path.read_bytes()
    path.write_bytes(data[:keep] if isinstance(keep, int) else data[:int(len(data) * keep)])


def _flip(data: bytes, at: int) -> bytes:
    return data[:at] + bytes([data[at] ^ 0xFF]) + data[at + 1:]


def _train_png(root: Path, i: int) -> Path:
    return root / "FER2013Train" / f"fer{i:07d}.png"


def _set_label_cell(row: int, col: int, value: str) -> Callable[[Path], None]:
    """Set 1-based (row, col) of FER2013Train/label.csv."""
    def f(root: Path) -> None:
        p = root / "FER2013Train" / "label.csv"
        rows = _read_csv(p)
        rows[row - 1][col - 1] = value
        _write_csv(p, rows)
    return f


def _set_new_cell(row: int, col: int, value: str) -> Callable[[Path], None]:
    """Set 1-based (file row, col) of fer2013new.csv."""
    def f(root: Path) -> None:
        rows = _read_csv(root / "fer2013new.csv")
        rows[row - 1][col - 1] = value
        _write_csv(root / "fer2013new.csv", rows)
    return f


def _duplicate_label_row(root: Path) -> None:
    p = root / "FER2013Train" / "label.csv"
    rows = _read_csv(p)
    _write_csv(p, [*rows[:3], [rows[1][0], *rows[3][1:]], *rows[4:]])  # row 4 names row 2's image


def _delete_row_in_each_file(root: Path) -> None:
    """Data row 1 of fer2013new.csv and data row 3 of fer2013.csv: counts and Usage still agree."""
    new, old = _read_csv(root / "fer2013new.csv"), _read_csv(root / "fer2013.csv")
    _write_csv(root / "fer2013new.csv", new[:2] + new[3:])
    _write_csv(root / "fer2013.csv", old[:4] + old[5:])


def _swap_new_rows(root: Path) -> None:
    rows = _read_csv(root / "fer2013new.csv")
    rows[2], rows[3] = rows[3], rows[2]  # data rows 1 and 2, both Training
    _write_csv(root / "fer2013new.csv", rows)


def _raf_label_lines(lines: list[str]) -> Callable[[Path], None]:
    def f(root: Path) -> None:
        (root / "EmoLabel" / "list_patition_label.txt").write_text("\n".join(lines) + "\n")
    return f


def _raf_jpg(stem: str) -> Callable[[Path], Path]:
    return lambda root: root / "Image" / "aligned" / f"{stem}_aligned.jpg"


LABEL = r"FER2013Train[/\\]label\.csv"
NEW = r"fer2013new\.csv"
RAF = r"list_patition_label\.txt"

# (id, layout, fault, split, message regex, whether `data counts` reads it)
CASES: list[tuple[str, str, Callable[[Path], object], str, str, bool]] = [
    # 1. bad image files
    ("png-truncated", "folders", lambda r: _truncate(_train_png(r, 2), 0.5), "train",
     LABEL + r", row 3: image fer0000002\.png cannot be decoded \(OSError: image file is truncated\); "
     r"expected a complete 48x48 grey PNG at .*fer0000002\.png", False),
    ("png-header-only", "folders", lambda r: _truncate(_train_png(r, 0), 60), "train",
     LABEL + r", row 1: image fer0000000\.png cannot be decoded \(OSError: image file is truncated", False),
    ("png-empty", "folders", lambda r: _train_png(r, 1).write_bytes(b""), "train",
     LABEL + r", row 2: image fer0000001\.png cannot be decoded \(empty file \(0 bytes\)\)", False),
    ("png-random-bytes", "folders", lambda r: _train_png(r, 4).write_bytes(os.urandom(700)), "train",
     LABEL + r", row 5: image fer0000004\.png cannot be decoded \(not an image file PIL can identify\)",
     False),
    ("png-corrupt-data", "folders",
     lambda r: _train_png(r, 3).write_bytes(_flip(_train_png(r, 3).read_bytes(), 200)), "train",
     LABEL + r", row 4: image fer0000003\.png cannot be decoded \(OSError: ", False),
    ("jpg-truncated-header", "rafdb", lambda r: _truncate(_raf_jpg("train_00002")(r), 200), "train",
     RAF + r", row 2: image train_00002_aligned\.jpg cannot be decoded \(OSError: Truncated File Read\); "
     r"expected a complete 100x100 image at ", False),
    ("jpg-truncated-data", "rafdb", lambda r: _truncate(_raf_jpg("test_00002")(r), 0.5), "test",
     RAF + r", row 5: image test_00002_aligned\.jpg cannot be decoded \(OSError: image file is truncated",
     False),
    ("jpg-empty", "rafdb", lambda r: _raf_jpg("train_00003")(r).write_bytes(b""), "train",
     RAF + r", row 3: image train_00003_aligned\.jpg cannot be decoded \(empty file \(0 bytes\)\)", False),
    # 2. votes
    ("vote-fraction", "folders", _set_label_cell(2, 4, "2.7"), "train",
     LABEL + r", row 2: column 4 \(happiness\): vote count '2\.7' is not a non-negative integer", True),
    ("vote-inf", "folders", _set_label_cell(3, 3, "inf"), "train",
     LABEL + r", row 3: column 3 \(neutral\): vote count 'inf' is not a non-negative integer", True),
    ("vote-nan", "folders", _set_label_cell(1, 12, "nan"), "train",
     LABEL + r", row 1: column 12 \(NF\): vote count 'nan' is not a non-negative integer", True),
    ("vote-negative", "folders", _set_label_cell(5, 6, "-1"), "train",
     LABEL + r", row 5: column 6 \(sadness\): vote count '-1' is not a non-negative integer", True),
    ("vote-empty", "folders", _set_label_cell(5, 7, ""), "train",
     LABEL + r", row 5: column 7 \(anger\): vote count '' is not a non-negative integer", True),
    ("vote-huge", "folders", _set_label_cell(4, 3, "1000000"), "train",
     LABEL + r", row 4: column 3 \(neutral\): vote count 1000000 is implausible, expected at most 1000",
     True),
    ("vote-400-digits", "folders", _set_label_cell(4, 3, "9" * 400), "train",
     LABEL + r", row 4: column 3 \(neutral\): vote count 9{20}\.\.\. is implausible", True),
    ("vote-row-total", "folders",
     lambda r: [_set_label_cell(1, c, "200")(r) for c in range(3, 13)], "train",
     LABEL + r", row 1: vote counts sum to 2000, expected at most 1000", True),
    ("csv-vote-fraction", "csv", _set_new_cell(8, 5, "2.7"), "train",
     NEW + r", row 8: column 5 \(surprise\): vote count '2\.7' is not a non-negative integer", True),
    ("csv-vote-inf", "csv", _set_new_cell(3, 3, "inf"), "train",
     NEW + r", row 3: column 3 \(neutral\): vote count 'inf' is not a non-negative integer", True),
    # 3. duplicates
    ("label-csv-duplicate", "folders", _duplicate_label_row, "train",
     LABEL + r", row 4: image fer0000001\.png listed twice, on rows 2 and 4", True),
    ("raf-duplicate-same-label", "rafdb", _raf_label_lines([*RAF_LABELS, "train_00002.jpg 4"]), "train",
     RAF + r", row 6: image train_00002\.jpg listed twice, on rows 2 and 6 \(the same label\)", True),
    ("raf-duplicate-other-label", "rafdb", _raf_label_lines(["test_00001.jpg 2", *RAF_LABELS]), "test",
     RAF + r", row 5: image test_00001\.jpg listed twice, on rows 1 and 5 \(labels 2 and 1\)", True),
    # 6. csv alignment
    ("csv-row-deleted-in-each-file", "csv", _delete_row_in_each_file, "train",
     NEW + r", row 3: image name fer0000002\.png is out of row order: after fer0000000\.png on row 2 "
     r"expected fer0000001\.png; fer2013new\.csv must follow .*fer2013\.csv row by row", True),
    ("csv-rows-swapped", "csv", _swap_new_rows, "valid",
     NEW + r", row 3: image name fer0000002\.png is out of row order", True),
    ("csv-name-not-fer", "csv", _set_new_cell(5, 2, "face3.png"), "test",
     NEW + r", row 5: image name 'face3\.png' is not of the form ferNNNNNNN\.png", True),
]


def _build(layout: str, root: Path) -> Path:
    root.mkdir(parents=True)
    if layout == "folders":
        return ferplus_folders(root)
    if layout == "csv":
        return ferplus_csv(root)
    return rafdb_official(root)


def _load(layout: str, root: Path, split: str) -> None:
    if layout == "rafdb":
        load_rafdb(root, split)
    else:
        load_ferplus(root, split)


def _cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(args)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize(("layout", "fault", "split", "message", "in_counts"),
                         [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_fault_is_a_data_error_naming_file_and_row(layout, fault, split, message, in_counts, tmp_path,
                                                   capsys):
    root = _build(layout, tmp_path / "data")
    _load(layout, root, split)  # the intact layout loads
    fault(root)
    with pytest.raises(DataError, match=message):
        _load(layout, root, split)
    if in_counts:
        dataset = "rafdb" if layout == "rafdb" else "ferplus"
        code, _, err = _cli(["data", "counts", "--dataset", dataset, "--root", str(root)], capsys)
        assert code == 2
        assert err.startswith("error: ") and err.count("\n") == 1
        assert re.search(message, err), err


def test_truncated_png_fails_even_when_pil_tolerates_truncation(tmp_path, monkeypatch):
    root = ferplus_folders(tmp_path)
    _truncate(_train_png(root, 2), 0.5)
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)  # as some other library may set it
    with pytest.raises(DataError, match=r"row 3: image fer0000002\.png cannot be decoded"):
        load_ferplus(root, "train")
    assert ImageFile.LOAD_TRUNCATED_IMAGES is True  # restored


def test_truncated_jpg_fails_even_when_pil_tolerates_truncation(tmp_path, monkeypatch):
    root = rafdb_official(tmp_path)
    _truncate(_raf_jpg("train_00001")(root), 0.5)
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
    with pytest.raises(DataError, match=r"row 1: image train_00001_aligned\.jpg cannot be decoded"):
        load_rafdb(root, "train")
    assert ImageFile.LOAD_TRUNCATED_IMAGES is True


def test_integral_float_votes_still_read(tmp_path):
    root = ferplus_folders(tmp_path)
    _set_label_cell(1, 3, "10.0")(root)
    assert load_ferplus(root, "train", load_images=False).votes[0, 0] == 10


# ---- dropped rows, by reason -----------------------------------------------------------------
DROP_VOTES = [
    [10, 0, 0, 0, 0, 0, 0, 0, 0, 0],  # kept: neutral
    [0, 0, 0, 0, 0, 0, 0, 0, 0, 0],  # no_votes (all zero)
    [1, 1, 1, 1, 1, 1, 1, 1, 1, 1],  # no_votes (single votes are removed)
    [4, 0, 3, 0, 3, 0, 0, 0, 0, 0],  # majority: 4/10 -> no_majority; probability: kept
    [4, 0, 0, 0, 0, 0, 0, 0, 3, 3],  # majority: no_majority; probability: low_coverage; multi_target: kept
    [3, 0, 2, 0, 2, 0, 2, 0, 0, 0],  # majority: no_majority; probability (4 classes), multi: low_coverage
    [0, 0, 0, 0, 0, 0, 0, 0, 8, 2],  # unknown
    [0, 0, 0, 0, 0, 0, 0, 0, 0, 10],  # not_face
    [2, 0, 0, 0, 0, 0, 0, 8, 0, 0],  # kept: contempt (8 classes); contempt (7 classes)
    [0, 6, 0, 0, 0, 0, 0, 0, 4, 0],  # kept: happiness
]


@pytest.mark.parametrize(("mode", "classes", "expected"), [
    ("majority", 8, {"no_votes": 2, "no_majority": 3, "unknown": 1, "not_face": 1}),
    ("majority", 7, {"no_votes": 2, "no_majority": 3, "unknown": 1, "not_face": 1, "contempt": 1}),
    ("probability", 8, {"no_votes": 2, "low_coverage": 2, "unknown": 1, "not_face": 1}),
    ("multi_target", 7, {"no_votes": 2, "low_coverage": 1, "unknown": 1, "not_face": 1, "contempt": 1}),
])
def test_dropped_rows_counted_by_reason(mode, classes, expected, tmp_path):
    root = ferplus_folders(tmp_path, {"train": DROP_VOTES})
    s = load_ferplus(root, "train", mode, classes)
    assert s.dropped == {r: expected.get(r, 0) for r in DROP_REASONS}
    assert len(s) + sum(s.dropped.values()) == len(DROP_VOTES) == s.meta["rows_read"]
    assert sum(s.dropped.values()) == s.meta["rows_dropped"]
    assert s.images.shape == (len(s), 48, 48)


def test_counts_report_dropped_rows(tmp_path, capsys):
    root = ferplus_folders(tmp_path, {"train": DROP_VOTES})
    c = ferplus_counts(root)
    assert c["splits"]["train"]["dropped"]["no_votes"] == 2
    assert c["splits"]["valid"]["dropped"] == dict.fromkeys(DROP_REASONS, 0)
    code, out, _ = _cli(["data", "counts", "--dataset", "ferplus", "--root", str(root), "--json"], capsys)
    assert code == 0 and '"no_majority": 3' in out


def test_csv_form_counts_the_not_a_face_row(tmp_path):
    s = load_ferplus(ferplus_csv(tmp_path), "train", load_images=False)
    assert s.dropped["not_face"] == 1 and len(s) == 5
    assert s.meta["duplicate_names_out_of_order"] == []


# ---- colour images ---------------------------------------------------------------------------
def _rgb(seed: int, equal: bool) -> Image.Image:
    g = _grey(seed)
    rgb = np.stack([g, g, g], -1) if equal else np.stack([g, 255 - g, g // 2], -1)
    return Image.fromarray(rgb.astype(np.uint8))


def test_colour_images_counted_and_warned_once_per_split(tmp_path):
    root = ferplus_folders(tmp_path)
    for i in (1, 3):
        _rgb(i, equal=False).save(_train_png(root, i))
    _rgb(2, equal=True).save(_train_png(root, 2))  # grey stored as RGB: not colour
    _rgb(0, equal=False).save(root / "FER2013Valid" / "fer0000000.png")
    seen: dict[str, list[warnings.WarningMessage]] = {}
    splits = {}
    for split in ("train", "valid", "test"):
        with warnings.catch_warnings(record=True) as w:
            warnings.simplefilter("always")
            splits[split] = load_ferplus(root, split)
        seen[split] = [x for x in w if "colour" in str(x.message)]
    assert [len(seen[s]) for s in ("train", "valid", "test")] == [1, 1, 0]
    msg = str(seen["train"][0].message)
    assert "FERPlus train split" in msg and "2 of 5 images are colour" in msg and "fer0000001.png" in msg
    assert "FERPlus valid split" in str(seen["valid"][0].message)
    tr = splits["train"]
    assert (tr.colour_images, tr.meta["grey_rgb_images"]) == (2, 1)
    assert (splits["valid"].colour_images, splits["test"].colour_images) == (1, 0)
    np.testing.assert_array_equal(tr.images[1], np.asarray(_rgb(1, equal=False).convert("L")))
    np.testing.assert_array_equal(tr.images[2], _grey(2))  # equal channels: the grey values exactly


# ---- csv alignment on the real names ---------------------------------------------------------
@pytest.fixture(scope="module")
def real_fer2013new() -> Path:
    candidates = [Path(os.environ["FERPLUS_ROOT"])] if os.environ.get("FERPLUS_ROOT") else []
    candidates.append(Path(__file__).resolve().parents[2] / "shared" / "data" / "ferplus")
    for root in candidates:
        if (root / "fer2013new.csv").is_file():
            return root / "fer2013new.csv"
    pytest.skip("no real fer2013new.csv (FERPLUS_ROOT or ../shared/data/ferplus): skipped")


def test_real_fer2013new_names_follow_rows(real_fer2013new):
    _, names, _ = read_fer2013new(real_fer2013new)
    exceptions = check_row_alignment(names, real_fer2013new)
    assert exceptions == [(5276, "fer0006953.png"), (5350, "fer0011785.png"), (15837, "fer0008403.png"),
                          (34336, "fer0033120.png")]  # FERPlus's four duplicate names


@pytest.mark.parametrize("data_row", [0, 40, 7000, 20000, 35000])
def test_real_fer2013new_missing_named_row_is_caught(real_fer2013new, data_row):
    _, names, _ = read_fer2013new(real_fer2013new)
    assert names[data_row - 1] and names[data_row] and names[data_row + 1]  # named, between named rows
    cut = names[:data_row] + names[data_row + 1:]
    with pytest.raises(DataError, match=rf"row {data_row + 2}: image name fer\d+\.png is out of row order"):
        check_row_alignment(cut, real_fer2013new)
