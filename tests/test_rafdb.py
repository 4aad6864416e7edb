from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from fer_study.classes import RAFDB_CLASSES
from fer_study.data.rafdb import load_rafdb, rafdb_counts, read_partition_labels, stratified_split
from fer_study.data.synth import write_rafdb_layout
from fer_study.errors import DataError

TRAIN = [1290, 281, 717, 4772, 1982, 705, 2524]
TEST = [329, 74, 160, 1185, 478, 162, 680]


def test_real_label_file_counts(rafdb_labels):
    c = rafdb_counts(labels_file=rafdb_labels)
    assert c["splits"]["train"]["total"] == 12271 and c["splits"]["test"]["total"] == 3068
    assert list(c["splits"]["train"]["per_class"].values()) == TRAIN
    assert list(c["splits"]["test"]["per_class"].values()) == TEST


@pytest.fixture(scope="module")
def raf_root(synth_root, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("rafdb") / "basic"
    write_rafdb_layout(synth_root, out, seed=0)
    return out


def test_official_layout_and_downscale(raf_root):
    s = load_rafdb(raf_root, "train")
    assert s.images.shape[1:] == (100, 100, 3) and s.classes == RAFDB_CLASSES
    d = load_rafdb(raf_root, "train", downscale_to=48, grayscale=True)
    assert d.images.shape[1:] == (48, 48) and len(d) == len(s)


def test_kaggle_layout(raf_root, tmp_path):
    s = load_rafdb(raf_root, "test", load_images=False)
    rows = ["image,label"]
    for name, lab in zip(s.source[:12], s.label[:12]):
        d = tmp_path / "DATASET" / "test" / str(lab + 1)
        d.mkdir(parents=True, exist_ok=True)
        img = Path(name).stem + "_aligned.jpg"
        shutil.copy(raf_root / "Image" / "aligned" / img, d / img)
        rows.append(f"{img},{lab + 1}")
    (tmp_path / "test_labels.csv").write_text("\n".join(rows) + "\n")
    k = load_rafdb(tmp_path, "test")
    assert k.meta["layout"] == "kaggle"
    np.testing.assert_array_equal(k.label, s.label[:12])


def test_folder_layout_needs_and_uses_class_order(raf_root, tmp_path):
    # the popular 0 Neutral, 1 Happiness, 2 Sadness, 3 Surprise, 4 Fear, 5 Disgust, 6 Anger order
    order = ["neutral", "happiness", "sadness", "surprise", "fear", "disgust", "anger"]
    s = load_rafdb(raf_root, "train", load_images=False)
    for j, (name, lab) in enumerate(zip(s.source[:14], s.label[:14])):
        folder = tmp_path / "train" / str(order.index(RAFDB_CLASSES[lab]))
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copy(raf_root / "Image" / "aligned" / (Path(name).stem + "_aligned.jpg"), folder / f"{j:03d}.jpg")
    for c in range(7):
        (tmp_path / "train" / str(c)).mkdir(parents=True, exist_ok=True)
    with pytest.raises(ValueError, match="class_order"):
        load_rafdb(tmp_path, "train", layout="folders")
    f = load_rafdb(tmp_path, "train", layout="folders", class_order=order)
    assert sorted(f.label.tolist()) == sorted(s.label[:14].tolist())


def test_stratified_split_is_seeded_and_disjoint():
    labels = np.repeat(np.arange(7), [50, 10, 20, 100, 40, 20, 60])
    tr, va = stratified_split(labels, 0.1, seed=1)
    tr2, va2 = stratified_split(labels, 0.1, seed=1)
    np.testing.assert_array_equal(va, va2)
    assert len(np.intersect1d(tr, va)) == 0 and len(tr) + len(va) == len(labels)
    assert np.bincount(labels[va]).tolist() == [5, 1, 2, 10, 4, 2, 6]


def test_bad_label_file(tmp_path):
    p = tmp_path / "list_patition_label.txt"
    p.write_text("train_00001.jpg 5\ntrain_00002.jpg 8\n")
    with pytest.raises(DataError, match=r"list_patition_label.txt, row 2: unknown label '8'"):
        read_partition_labels(p)
    p.write_text("train_00001.jpg\n")
    with pytest.raises(DataError, match="row 1: expected 'name label'"):
        read_partition_labels(p)
    p.write_text("train_00001.jpg 5\ntrain_00002.jpg 3\ntrain_00001.jpg 2\n")
    with pytest.raises(DataError, match=r"row 3: image train_00001.jpg listed twice, on rows 1 and 3 "
                                        r"\(labels 5 and 2\)"):
        read_partition_labels(p)


def test_missing_image_named(raf_root, tmp_path):
    root = tmp_path / "basic"
    shutil.copytree(raf_root, root)
    first = sorted((root / "Image" / "aligned").glob("train_*"))[0]
    first.unlink()
    with pytest.raises(DataError, match=f"image {first.name} not found"):
        load_rafdb(root, "train")


def test_image_errors_name_the_label_file_line(raf_root, tmp_path):
    root = tmp_path / "basic"
    shutil.copytree(raf_root, root)
    lf = root / "EmoLabel" / "list_patition_label.txt"
    lines = lf.read_text().splitlines()
    lf.write_text("\n\n" + "\n".join(lines) + "\n")  # blank lines still count as rows
    img = root / "Image" / "aligned" / (Path(lines[0].split()[0]).stem + "_aligned.jpg")
    img.write_bytes(img.read_bytes()[:300])
    with pytest.raises(DataError, match=rf"list_patition_label.txt, row 3: image {img.name} cannot be "
                                        r"decoded"):
        load_rafdb(root, lines[0].split("_")[0])
