"""RAF-DB (basic) reader: the official layout, the Kaggle layout and class-folder layouts.

Labels are returned in RAF-DB's **native order** (labels 1..7 of list_patition_label.txt, 0-based):
surprise, fear, disgust, happiness, sadness, anger, neutral
(:data:`fer_study.classes.RAFDB_CLASSES`). The matching PDLS prior is
:func:`fer_study.data.prior.rafdb_prior`.

Layouts
-------
``official``  ``ROOT/EmoLabel/list_patition_label.txt`` (lines ``train_00001.jpg 5``) and
              ``ROOT/Image/aligned/train_00001_aligned.jpg`` (100x100 RGB).
``kaggle``    ``ROOT/DATASET/{train,test}/{1..7}/*.jpg`` with ``ROOT/train_labels.csv`` /
              ``ROOT/test_labels.csv`` (header ``image,label``, labels 1..7 native).
``folders``   ``ROOT/{train,test}/<class>/*`` in any class order, which must be declared
              (``class_order``: the native class name of each folder, in folder order).

RAF-DB has no validation split; :func:`stratified_split` carves a seeded, stratified one out of
train so that no model is selected on the test set.

An image listed twice in a label file, or an image file that does not decode completely
(truncated, empty, not an image), is a :class:`~fer_study.errors.DataError` naming the row.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from fer_study.classes import RAFDB_CLASSES
from fer_study.data.ferplus import FERSplit, open_image
from fer_study.errors import DataError

LABEL_FILE = Path("EmoLabel") / "list_patition_label.txt"
IMAGE_EXTS = (".jpg", ".jpeg", ".png")


def read_partition_labels(path: str | Path) -> list[tuple[str, int]]:
    """Parse list_patition_label.txt into (image name, native 0-based label); names must be unique."""
    return [(name, lab) for name, lab, _ in _read_partition_rows(Path(path))]


def _read_partition_rows(path: Path) -> list[tuple[str, int, int]]:
    """:func:`read_partition_labels` with each entry's line number."""
    if not path.is_file():
        raise DataError("RAF-DB label file not found (expected EmoLabel/list_patition_label.txt)", path)
    out = []
    first: dict[str, tuple[int, int]] = {}
    for i, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 2:
            raise DataError(f"expected 'name label', found {line!r}", path, i)
        name, lab = parts
        if not lab.isdigit() or not 1 <= int(lab) <= 7:
            raise DataError(f"unknown label {lab!r} (RAF-DB basic labels are 1..7)", path, i)
        if not (name.startswith("train_") or name.startswith("test_")):
            raise DataError(f"image name {name!r} does not start with train_ or test_", path, i)
        if name in first:
            row, was = first[name]
            same = "the same label" if was == int(lab) else f"labels {was} and {lab}"
            raise DataError(f"image {name} listed twice, on rows {row} and {i} ({same}); expected each "
                            "image once", path, i)
        first[name] = (i, int(lab))
        out.append((name, int(lab) - 1, i))
    return out


def _load_image(path: Path, size: int | None, rowref: tuple[Path | None, int | None],
                expect: int | None = 100) -> np.ndarray:
    from PIL import Image

    if not path.is_file():
        raise DataError(f"image {path.name} not found at {path}", *rowref)
    what = f"a complete {expect}x{expect} image" if expect is not None else "a complete image"
    with open_image(path, rowref, what) as im:
        im = im.convert("RGB")
        if expect is not None and im.size != (expect, expect):
            raise DataError(f"image {path.name} is {im.size[0]}x{im.size[1]}, expected "
                            f"{expect}x{expect} (aligned RAF-DB)", *rowref)
        if size is not None and im.size != (size, size):
            im = im.resize((size, size), Image.BICUBIC)
        return np.asarray(im, dtype=np.uint8)


def load_rafdb(
    root: str | Path,
    split: str,
    layout: str = "auto",
    class_order: list[str] | None = None,
    downscale_to: int | None = None,
    load_images: bool = True,
    labels_file: str | Path | None = None,
    grayscale: bool = False,
) -> FERSplit:
    """Load the train or test split of RAF-DB basic in native class order.

    ``downscale_to=48`` reproduces the paper's 100 -> 48 downscale before SR. ``labels_file``
    overrides the label file location of the official layout (images are then looked up in
    ``root/Image/aligned``). ``grayscale`` converts to (N, H, W) uint8 like FERPlus.
    """
    root = Path(root)
    if split not in ("train", "test"):
        raise ValueError(f"RAF-DB has train and test splits (carve valid with stratified_split), not {split!r}")
    if layout == "auto":
        if labels_file is not None or (root / LABEL_FILE).is_file():
            layout = "official"
        elif (root / "DATASET").is_dir():
            layout = "kaggle"
        elif (root / split).is_dir():
            layout = "folders"
        else:
            raise DataError("no RAF-DB layout found (EmoLabel/list_patition_label.txt, DATASET/, "
                            "or train/ test/ class folders)", root)
    items: list[tuple[Path, int, str, tuple[Path | None, int | None]]] = []
    if layout == "official":
        lf = Path(labels_file) if labels_file is not None else root / LABEL_FILE
        for name, lab, i in _read_partition_rows(lf):
            if name.startswith(split + "_"):
                img = root / "Image" / "aligned" / (Path(name).stem + "_aligned.jpg")
                items.append((img, lab, name, (lf, i)))
    elif layout == "kaggle":
        lf = root / f"{split}_labels.csv"
        if not lf.is_file():
            raise DataError("label file not found", lf)
        with lf.open(newline="") as f:
            rows = list(csv.reader(f))
        if not rows or [c.strip() for c in rows[0]] != ["image", "label"]:
            raise DataError(f"wrong header {rows[0] if rows else []}, expected ['image', 'label']", lf, 1)
        first: dict[str, int] = {}
        for i, row in enumerate(rows[1:], start=2):
            if len(row) != 2 or not row[1].strip().isdigit() or not 1 <= int(row[1]) <= 7:
                raise DataError(f"malformed row {row!r} (labels are 1..7)", lf, i)
            if row[0] in first:
                raise DataError(f"image {row[0]} listed twice, on rows {first[row[0]]} and {i}; expected "
                                "each image once", lf, i)
            first[row[0]] = i
            lab = int(row[1])
            items.append((root / "DATASET" / split / str(lab) / row[0], lab - 1, row[0], (lf, i)))
    elif layout == "folders":
        if class_order is None:
            raise ValueError("layout 'folders' needs class_order: the native class name of each "
                             "folder in sorted folder order (a wrong order mislabels silently)")
        folders = sorted(p for p in (root / split).iterdir() if p.is_dir())
        if len(folders) != len(class_order):
            raise DataError(f"{len(folders)} class folders but class_order names {len(class_order)}",
                            root / split)
        for folder, cname in zip(folders, class_order):
            if cname not in RAFDB_CLASSES:
                raise ValueError(f"unknown class {cname!r}; classes are {RAFDB_CLASSES}")
            for img in sorted(folder.iterdir()):
                if img.suffix.lower() in IMAGE_EXTS:
                    items.append((img, RAFDB_CLASSES.index(cname), f"{folder.name}/{img.name}", (None, None)))
    else:
        raise ValueError(f"layout must be auto, official, kaggle or folders, not {layout!r}")
    if not items:
        raise DataError(f"split {split!r} is empty", root)

    labels = np.asarray([it[1] for it in items], dtype=np.int64)
    images = None
    if load_images:
        imgs = [_load_image(p, downscale_to, ref, expect=100 if layout == "official" else None)
                for p, _, _, ref in items]
        images = np.stack(imgs)
        if grayscale:
            images = np.round(images @ np.array([0.299, 0.587, 0.114])).clip(0, 255).astype(np.uint8)
    onehot = np.eye(7, dtype=np.float32)[labels]
    votes = np.zeros((len(labels), 10), dtype=np.int64)
    votes[np.arange(len(labels)), labels] = 1
    return FERSplit(name="rafdb", split=split, classes=RAFDB_CLASSES, label=labels, target=onehot,
                    votes=votes, source=[it[2] for it in items], images=images,
                    meta={"root": str(root), "layout": layout, "downscale_to": downscale_to})


def stratified_split(labels: np.ndarray, fraction: float = 0.1, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Seeded stratified (train_idx, valid_idx): ``fraction`` of each class (at least one) to valid."""
    rng = np.random.default_rng(seed)
    labels = np.asarray(labels)
    valid = []
    for k in np.unique(labels):
        idx = np.flatnonzero(labels == k)
        rng.shuffle(idx)
        n = max(1, int(round(fraction * len(idx)))) if len(idx) > 1 else 0
        valid.extend(idx[:n].tolist())
    valid_idx = np.sort(np.asarray(valid, dtype=np.int64))
    train_idx = np.setdiff1d(np.arange(len(labels)), valid_idx)
    return train_idx, valid_idx


def subset(s: FERSplit, idx: np.ndarray, split: str) -> FERSplit:
    return FERSplit(name=s.name, split=split, classes=s.classes, label=s.label[idx], target=s.target[idx],
                    votes=s.votes[idx], source=[s.source[i] for i in idx],
                    images=None if s.images is None else s.images[idx], meta=dict(s.meta),
                    dropped=dict(s.dropped), colour_images=s.colour_images)


def rafdb_counts(root: str | Path | None = None, labels_file: str | Path | None = None,
                 layout: str = "auto") -> dict:
    out: dict = {"dataset": "rafdb", "splits": {}}
    for split in ("train", "test"):
        s = load_rafdb(root or ".", split, layout=layout, load_images=False, labels_file=labels_file)
        out["splits"][split] = {"total": len(s), "per_class": s.class_counts()}
    return out
