from __future__ import annotations

import csv
import shutil
from pathlib import Path

import numpy as np
import pytest

from fer_study.data.ferplus import ferplus_counts, load_ferplus, process_votes
from fer_study.errors import DataError

TRAIN = [8733, 7284, 3136, 3022, 2098, 116, 536, 120]
VALID = [1180, 862, 411, 348, 289, 25, 60, 16]
TEST = [1083, 892, 394, 382, 269, 16, 86, 15]


# ---- label modes, hand-computed ------------------------------------------------------------
def test_majority_keeps_more_than_half_after_single_vote_removal():
    # 4 neutral, 1 happiness (removed as a single vote), 3 anger, 2 disgust -> 4/9 is not > half
    assert process_votes([4, 1, 0, 0, 3, 2, 0, 0, 0, 0], "majority").argmax() == 8
    # 6 neutral, 1 surprise (removed), 1 sad (removed), 2 unknown -> 6/8 > half: neutral
    d = process_votes([6, 0, 1, 1, 0, 0, 0, 0, 2, 0], "majority")
    assert d.tolist() == [1.0] + [0.0] * 9


def test_probability_mode_takes_top_classes_to_75_percent():
    d = process_votes([5, 0, 3, 0, 0, 0, 2, 0, 0, 0], "probability")
    # 5 -> 50 % < 75 %, add 3 -> 80 %: stop; fear's 2 votes are not taken
    np.testing.assert_allclose(d[:8], [5 / 8, 0, 3 / 8, 0, 0, 0, 0, 0])


def test_probability_mode_stops_at_unknown_and_drops_poor_coverage():
    d = process_votes([3, 0, 0, 0, 0, 0, 0, 0, 4, 3], "crossentropy")
    assert d.argmax() == 8  # unknown wins -> dropped
    d = process_votes([4, 0, 0, 0, 0, 0, 0, 0, 3, 3], "probability")
    # neutral 4/10 < 75 %, then unknown reached after other emotions: unknown zeroed, 40 % <= 50 % -> drop
    assert d.argmax() == 8


def test_multi_target_threshold():
    d = process_votes([4, 0, 3, 0, 0, 0, 2, 0, 1, 0], "multi_target")
    # single unknown vote removed: total 9; >= 30 % of 9 = 2.7 -> neutral 4, surprise 3
    np.testing.assert_allclose(d[:8], [4 / 7, 0, 3 / 7, 0, 0, 0, 0, 0])


def test_unknown_mode_rejected():
    with pytest.raises(ValueError, match="label mode"):
        process_votes([10] + [0] * 9, "vote")


# ---- SynthFER in the csv form ----------------------------------------------------------------
def test_csv_form_reads_synth(synth_root):
    s = load_ferplus(synth_root, "train")
    assert s.images.shape == (len(s), 48, 48) and s.images.dtype == np.uint8
    assert s.votes.shape == (len(s), 10)
    assert s.target.shape == (len(s), 8)
    np.testing.assert_array_equal(s.target.argmax(1), s.label)
    assert s.source[0].startswith("fer2013new.csv:")
    soft = load_ferplus(synth_root, "train", "probability")
    assert np.allclose(soft.target.sum(1), 1.0)
    assert load_ferplus(synth_root, "valid", "probability").meta["label_mode"] == "majority"


def test_seven_classes_drop_contempt(synth_root):
    s8 = load_ferplus(synth_root, "train", num_classes=8)
    s7 = load_ferplus(synth_root, "train", num_classes=7)
    assert len(s7) == len(s8) - int((s8.label == 7).sum())
    assert s7.target.shape[1] == 7


# ---- the real FERPlus copy -------------------------------------------------------------------
def test_real_ferplus_counts_majority(ferplus_root):
    c = ferplus_counts(ferplus_root)
    for split, expected in (("train", TRAIN), ("valid", VALID), ("test", TEST)):
        assert list(c["splits"][split]["per_class"].values()) == expected
    assert [c["splits"][s]["total"] for s in ("train", "valid", "test")] == [25045, 3191, 3137]
    # rows read (label.csv) minus rows kept, by reason; no contempt drops with 8 classes
    assert [sum(c["splits"][s]["dropped"].values()) for s in ("train", "valid", "test")] == [3513, 388, 436]
    assert c["splits"]["train"]["dropped"] == {"no_votes": 0, "no_majority": 3434, "low_coverage": 0,
                                               "unknown": 77, "not_face": 2, "contempt": 0}


def test_real_ferplus_counts_seven_classes(ferplus_root):
    c = ferplus_counts(ferplus_root, num_classes=7)
    assert [c["splits"][s]["total"] for s in ("train", "valid", "test")] == [24925, 3175, 3122]
    assert [c["splits"][s]["dropped"]["contempt"] for s in ("train", "valid", "test")] == [120, 16, 15]


def test_real_ferplus_images_and_vote_source(ferplus_root):
    s = load_ferplus(ferplus_root, "test")
    assert s.images.shape == (3137, 48, 48)
    alt = load_ferplus(ferplus_root, "test", vote_source="fer2013new.csv", load_images=False)
    assert alt.meta["vote_source"] == "fer2013new.csv" and len(alt) != len(s)


# ---- bad input -------------------------------------------------------------------------------
def _copy(synth_root: Path, tmp_path: Path) -> Path:
    for f in ("fer2013.csv", "fer2013new.csv"):
        shutil.copy(synth_root / f, tmp_path / f)
    return tmp_path


def _rewrite(path: Path, fn) -> None:
    rows = list(csv.reader(path.open(newline="")))
    rows = fn(rows)
    with path.open("w", newline="") as f:
        csv.writer(f).writerows(rows)


def test_missing_file_named(synth_root, tmp_path):
    root = _copy(synth_root, tmp_path)
    (root / "fer2013new.csv").unlink()
    with pytest.raises(DataError, match="fer2013new.csv: file not found"):
        load_ferplus(root, "train")


def test_wrong_header_named(synth_root, tmp_path):
    root = _copy(synth_root, tmp_path)
    _rewrite(root / "fer2013.csv", lambda r: [["label", "pixels", "Usage"]] + r[1:])
    with pytest.raises(DataError, match=r"fer2013.csv, row 1: wrong header"):
        load_ferplus(root, "train")


def test_short_pixel_string_names_row(synth_root, tmp_path):
    root = _copy(synth_root, tmp_path)

    def cut(rows):
        rows[5][1] = " ".join(rows[5][1].split()[:2000])
        return rows
    _rewrite(root / "fer2013.csv", cut)
    with pytest.raises(DataError, match=r"fer2013.csv, row 6: pixel string has 2000 values"):
        load_ferplus(root, "train")


def test_row_count_mismatch(synth_root, tmp_path):
    root = _copy(synth_root, tmp_path)
    _rewrite(root / "fer2013new.csv", lambda r: r[:-3])
    with pytest.raises(DataError, match="row count mismatch"):
        load_ferplus(root, "train")


def test_unknown_label_value(synth_root, tmp_path):
    root = _copy(synth_root, tmp_path)

    def bad(rows):
        rows[3][0] = "9"
        return rows
    _rewrite(root / "fer2013.csv", bad)
    with pytest.raises(DataError, match=r"row 4: unknown emotion label '9'"):
        load_ferplus(root, "train")


def test_malformed_votes_named(synth_root, tmp_path):
    root = _copy(synth_root, tmp_path)

    def bad(rows):
        rows[7][4] = "x"
        return rows
    _rewrite(root / "fer2013new.csv", bad)
    with pytest.raises(DataError, match=r"fer2013new.csv, row 8: column 5 \(surprise\): vote count 'x' "
                                        r"is not a non-negative integer"):
        load_ferplus(root, "train")


def _folder_form(synth_root: Path, tmp_path: Path, n: int = 20) -> Path:
    from PIL import Image

    train = load_ferplus(synth_root, "train", "majority")
    folder = tmp_path / "FER2013Train"
    folder.mkdir()
    rows = []
    for i in range(n):
        name = f"fer{i:07d}.png"
        Image.fromarray(train.images[i]).save(folder / name)
        rows.append([name, "(0, 0, 48, 48)", *train.votes[i].tolist()])
    with (folder / "label.csv").open("w", newline="") as f:
        csv.writer(f).writerows(rows)
    return tmp_path


def test_folder_form_round_trip(synth_root, tmp_path):
    root = _folder_form(synth_root, tmp_path)
    s = load_ferplus(root, "train")
    ref = load_ferplus(synth_root, "train")
    assert s.meta["form"] == "folders" and len(s) == 20
    np.testing.assert_array_equal(s.images, ref.images[:20])
    np.testing.assert_array_equal(s.label, ref.label[:20])


def test_wrong_image_size_named(synth_root, tmp_path):
    from PIL import Image

    root = _folder_form(synth_root, tmp_path)
    Image.new("L", (64, 64)).save(root / "FER2013Train" / "fer0000004.png")
    with pytest.raises(DataError, match=r"label.csv, row 5: image fer0000004.png is 64x64, expected 48x48"):
        load_ferplus(root, "train")


def test_empty_split(tmp_path):
    (tmp_path / "FER2013Test").mkdir()
    (tmp_path / "FER2013Test" / "label.csv").write_text("")
    with pytest.raises(DataError, match="split 'test' is empty"):
        load_ferplus(tmp_path, "test")
