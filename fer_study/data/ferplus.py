"""FERPlus reader: both official forms, the official trainer's label modes.

Forms read
----------
``csv``
    ``fer2013.csv`` (header ``emotion,pixels,Usage``; 2,304 space-separated pixels per row) together
    with ``fer2013new.csv`` (header ``Usage,Image name,neutral,...,contempt,unknown,NF``). The two
    are aligned **by row**: image names in fer2013new.csv are not unique (not-a-face rows have an
    empty name, some names occur twice).
``folders``
    The FERPlus generator's output ``FER2013Train|Valid|Test/`` of 48x48 PNGs, each folder with a
    header-less ``label.csv``: ``fer0000000.png,"(0, 0, 48, 48)",4,0,0,1,3,2,0,0,0,0``. The votes
    come from ``label.csv`` (default) or from ``fer2013new.csv`` (``vote_source``), which disagree
    on about 1,600 images.

Label modes (``src/ferplus.py`` of the official FERPlus trainer, reproduced rule for rule):
single votes are zeroed first; ``majority`` keeps an image when one class has more than half of
the remaining votes; ``probability``/``crossentropy`` take the top classes until 75 % of the votes
(at most 3, stopping at unknown/NF) and drop the image when <= 50 % is covered; ``multi_target``
keeps classes with >= 30 % of the votes and drops the image when <= 50 % is covered. Images won by
unknown or not-a-face are dropped. Validation and test always use ``majority``.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from fer_study.classes import FERPLUS_VOTE_COLUMNS, ferplus_classes
from fer_study.errors import DataError

LABEL_MODES = ("majority", "probability", "crossentropy", "multi_target")
SPLITS = ("train", "valid", "test")
USAGE_TO_SPLIT = {"Training": "train", "PublicTest": "valid", "PrivateTest": "test"}
SPLIT_FOLDERS = {"train": "FER2013Train", "valid": "FER2013Valid", "test": "FER2013Test"}
FER2013_HEADER = ["emotion", "pixels", "Usage"]
FER2013NEW_HEADER = ["Usage", "Image name", *FERPLUS_VOTE_COLUMNS]
NUM_PIXELS = 48 * 48

LabelMode = Literal["majority", "probability", "crossentropy", "multi_target"]


@dataclass
class FERSplit:
    """One split of a FER data set, in the data set's class order.

    images: (N, H, W) uint8 (grayscale) or (N, H, W, 3) uint8; ``None`` when not loaded.
    votes: (N, 10) raw annotator votes (FERPlus) or one-hot (single-label data sets).
    label: (N,) hard label (argmax of the processed target).
    target: (N, C) soft target of the label mode (one-hot in majority mode).
    source: per image, ``file:row`` or the image file name it came from.
    """

    name: str
    split: str
    classes: tuple[str, ...]
    label: np.ndarray
    target: np.ndarray
    votes: np.ndarray
    source: list[str]
    images: np.ndarray | None = None
    meta: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.label)

    def class_counts(self) -> dict[str, int]:
        counts = np.bincount(self.label, minlength=len(self.classes))
        return {c: int(n) for c, n in zip(self.classes, counts)}


def process_votes(votes: np.ndarray, mode: str) -> np.ndarray:
    """The official FERPlus trainer's ``_process_target`` on one 10-vote vector.

    Returns a length-10 distribution; an image that must be dropped returns the "unknown" one-hot
    (index 8), exactly as the official code does.
    """
    if mode not in LABEL_MODES:
        raise ValueError(f"unknown label mode {mode!r}; choose from {LABEL_MODES}")
    raw = [float(v) for v in votes]
    size = len(raw)
    unknown = [0.0] * size
    unknown[-2] = 1.0
    raw = [0.0 if v < 1.0 + 1e-12 else v for v in raw]  # single votes are outliers
    total = sum(raw)
    emotion = [0.0] * size
    if mode == "majority":
        maxval = max(raw)
        if maxval > 0.5 * total:
            emotion[int(np.argmax(raw))] = maxval
        else:
            emotion = unknown
    elif mode in ("probability", "crossentropy"):
        sum_part, count, valid = 0.0, 0, True
        while sum_part < 0.75 * total and count < 3 and valid:
            maxval = max(raw)
            for i in range(size):
                if raw[i] == maxval:
                    emotion[i] = maxval
                    raw[i] = 0.0
                    sum_part += emotion[i]
                    count += 1
                    if i >= 8:  # unknown or not-a-face reached
                        valid = False
                        if sum(emotion) > maxval:  # other emotions came before it
                            emotion[i] = 0.0
                            count -= 1
                        break
        if sum(emotion) <= 0.5 * total or count > 3:
            emotion = unknown
    else:  # multi_target
        for i in range(size):
            if raw[i] >= 0.3 * total:
                emotion[i] = raw[i]
        if sum(emotion) <= 0.5 * total:
            emotion = unknown
    s = sum(emotion)
    return np.asarray([e / s for e in emotion], dtype=np.float64)


def _targets(votes: np.ndarray, mode: str, num_classes: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Process all vote rows; returns (keep mask, hard labels, soft targets) for kept rows."""
    keep = np.zeros(len(votes), dtype=bool)
    labels, targets = [], []
    for i, v in enumerate(votes):
        dist = process_votes(v, mode)
        idx = int(np.argmax(dist))
        if idx >= 8:  # unknown / not-a-face: dropped
            continue
        emo = dist[:8]
        emo = emo / emo.sum()
        if num_classes == 7:
            if idx == 7:  # contempt images are dropped in the 7-class setting
                continue
            emo = emo[:7]
            if emo.sum() <= 0:
                continue
            emo = emo / emo.sum()
        keep[i] = True
        labels.append(int(np.argmax(emo)))
        targets.append(emo)
    c = num_classes
    return keep, np.asarray(labels, dtype=np.int64), np.asarray(targets, dtype=np.float32).reshape(-1, c)


def _read_csv_rows(path: Path) -> list[list[str]]:
    if not path.is_file():
        raise DataError("file not found", path)
    with path.open(newline="") as f:
        return list(csv.reader(f))


def _parse_votes(row: list[str], path: Path, rowno: int, start: int) -> list[int]:
    cells = row[start:start + 10]
    if len(cells) != 10:
        raise DataError(f"expected 10 vote columns, found {len(cells)}", path, rowno)
    try:
        votes = [int(float(c)) for c in cells]
    except ValueError as e:
        raise DataError(f"vote counts must be integers ({e})", path, rowno) from None
    if any(v < 0 for v in votes):
        raise DataError("negative vote count", path, rowno)
    return votes


def read_fer2013new(path: Path) -> tuple[list[str], list[str], np.ndarray]:
    """Read fer2013new.csv: (usage per row, image name per row, votes (N, 10))."""
    rows = _read_csv_rows(path)
    if not rows or [h.strip() for h in rows[0]] != FER2013NEW_HEADER:
        raise DataError(f"wrong header {rows[0] if rows else []}, expected {FER2013NEW_HEADER}", path, 1)
    usage, names, votes = [], [], []
    for i, row in enumerate(rows[1:], start=2):
        if len(row) != 12:
            raise DataError(f"expected 12 columns, found {len(row)}", path, i)
        if row[0] not in USAGE_TO_SPLIT:
            raise DataError(f"unknown Usage {row[0]!r}", path, i)
        usage.append(row[0])
        names.append(row[1])
        votes.append(_parse_votes(row, path, i, 2))
    return usage, names, np.asarray(votes, dtype=np.int64).reshape(-1, 10)


def read_fer2013(path: Path, load_pixels: bool = True) -> tuple[list[str], np.ndarray | None]:
    """Read fer2013.csv: (usage per row, images (N, 48, 48) uint8 or None)."""
    rows = _read_csv_rows(path)
    if not rows or [h.strip() for h in rows[0]] != FER2013_HEADER:
        raise DataError(f"wrong header {rows[0] if rows else []}, expected {FER2013_HEADER}", path, 1)
    usage: list[str] = []
    images = np.empty((len(rows) - 1, 48, 48), dtype=np.uint8) if load_pixels else None
    for i, row in enumerate(rows[1:], start=2):
        if len(row) != 3:
            raise DataError(f"expected 3 columns, found {len(row)}", path, i)
        if row[2] not in USAGE_TO_SPLIT:
            raise DataError(f"unknown Usage {row[2]!r}", path, i)
        if not row[0].strip().isdigit() or not 0 <= int(row[0]) <= 6:
            raise DataError(f"unknown emotion label {row[0]!r} (FER2013 codes are 0-6)", path, i)
        usage.append(row[2])
        if images is not None:
            px = row[1].split()
            if len(px) != NUM_PIXELS:
                raise DataError(f"pixel string has {len(px)} values, expected {NUM_PIXELS}", path, i)
            try:
                arr = np.asarray(px, dtype=np.int64)
            except ValueError:
                raise DataError("pixel string has non-integer values", path, i) from None
            if arr.min() < 0 or arr.max() > 255:
                raise DataError("pixel values outside 0-255", path, i)
            images[i - 2] = arr.reshape(48, 48).astype(np.uint8)
    return usage, images


def read_label_csv(path: Path) -> tuple[list[str], np.ndarray]:
    """Read a generator ``label.csv`` (no header): (image names, votes (N, 10))."""
    rows = _read_csv_rows(path)
    names, votes = [], []
    for i, row in enumerate(rows, start=1):
        if len(row) != 12:
            raise DataError(f"expected 12 columns (name, box, 10 votes), found {len(row)}", path, i)
        names.append(row[0])
        votes.append(_parse_votes(row, path, i, 2))
    return names, np.asarray(votes, dtype=np.int64).reshape(-1, 10)


def _load_png(path: Path, rowref: tuple[Path, int]) -> np.ndarray:
    from PIL import Image

    if not path.is_file():
        raise DataError(f"image {path.name} listed but not found at {path}", *rowref)
    with Image.open(path) as im:
        arr = np.asarray(im.convert("L"))
    if arr.shape != (48, 48):
        raise DataError(f"image {path.name} is {arr.shape[1]}x{arr.shape[0]}, expected 48x48", *rowref)
    return arr


def detect_form(root: Path) -> str:
    if (root / "fer2013.csv").is_file():
        return "csv"
    if any((root / d).is_dir() for d in SPLIT_FOLDERS.values()):
        return "folders"
    raise DataError(
        "no FERPlus data found: expected fer2013.csv + fer2013new.csv, or FER2013Train/ "
        "FER2013Valid/ FER2013Test/ folders with label.csv", root)


def load_ferplus(
    root: str | Path,
    split: str,
    label_mode: str = "majority",
    num_classes: int = 8,
    form: str = "auto",
    vote_source: str = "auto",
    load_images: bool = True,
) -> FERSplit:
    """Load one FERPlus split in FERPlus class order.

    ``label_mode`` applies to the training split; validation and test always use ``majority``
    (the official protocol). ``vote_source`` is ``label.csv`` or ``fer2013new.csv`` for the folder
    form (``auto``: label.csv); the csv form always takes fer2013new.csv.
    """
    root = Path(root)
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, not {split!r}")
    if label_mode not in LABEL_MODES:
        raise ValueError(f"unknown label mode {label_mode!r}; choose from {LABEL_MODES}")
    mode = label_mode if split == "train" else "majority"
    classes = ferplus_classes(num_classes)
    form = detect_form(root) if form == "auto" else form

    images: np.ndarray | None
    extra_meta: dict = {}
    if form == "csv":
        new_path, old_path = root / "fer2013new.csv", root / "fer2013.csv"
        usage_new, names, votes = read_fer2013new(new_path)
        usage_old, images_all = read_fer2013(old_path, load_pixels=load_images)
        if len(usage_new) != len(usage_old):
            raise DataError(
                f"row count mismatch: fer2013.csv has {len(usage_old)} rows, fer2013new.csv "
                f"{len(usage_new)}; the two files are aligned by row and must match", new_path)
        for i, (a, b) in enumerate(zip(usage_old, usage_new)):
            if a != b:
                raise DataError(f"Usage {b!r} differs from fer2013.csv's {a!r} on the same row",
                                new_path, i + 2)
        rows = np.asarray([i for i, u in enumerate(usage_new) if USAGE_TO_SPLIT[u] == split])
        if len(rows) == 0:
            raise DataError(f"split {split!r} is empty", new_path)
        votes = votes[rows]
        source = [f"fer2013new.csv:{r + 2}" + (f":{names[r]}" if names[r] else "") for r in rows]
        images = images_all[rows] if images_all is not None else None
    elif form == "folders":
        folder = root / SPLIT_FOLDERS[split]
        label_path = folder / "label.csv"
        names_l, votes = read_label_csv(label_path)
        if len(names_l) == 0:
            raise DataError(f"split {split!r} is empty", label_path)
        src = "label.csv" if vote_source == "auto" else vote_source
        if src == "fer2013new.csv":
            votes, dup = _votes_from_fer2013new(root / "fer2013new.csv", split, names_l, label_path)
            extra_meta["duplicate_names_resolved_to_last_row"] = dup
        elif src != "label.csv":
            raise ValueError(f"vote_source must be label.csv or fer2013new.csv, not {vote_source!r}")
        source = list(names_l)
        images = None
        if load_images:
            images = np.stack([_load_png(folder / n, (label_path, i + 1)) for i, n in enumerate(names_l)])
    else:
        raise ValueError(f"form must be auto, csv or folders, not {form!r}")

    keep, labels, targets = _targets(votes, mode, num_classes)
    idx = np.flatnonzero(keep)
    return FERSplit(
        name="ferplus", split=split, classes=classes, label=labels, target=targets,
        votes=votes[idx], source=[source[i] for i in idx],
        images=None if images is None else images[idx],
        meta={"root": str(root), "form": form, "label_mode": mode, "num_classes": num_classes,
              "vote_source": "fer2013new.csv" if form == "csv" else (
                  "label.csv" if vote_source == "auto" else vote_source),
              "rows_read": int(len(votes)), "rows_dropped": int(len(votes) - len(idx)), **extra_meta},
    )


def _votes_from_fer2013new(path: Path, split: str, names: list[str],
                           label_path: Path) -> tuple[np.ndarray, list[str]]:
    """Votes for folder images looked up by name in fer2013new.csv.

    A name that occurs twice within a split resolves to its *last* row: the FERPlus generator
    writes PNGs by name, so the later row's image overwrote the earlier one on disk.
    """
    usage, new_names, votes = read_fer2013new(path)
    table: dict[str, int] = {}
    dup: set[str] = set()
    for i, (u, n) in enumerate(zip(usage, new_names)):
        if USAGE_TO_SPLIT[u] != split or not n:
            continue
        if n in table:
            dup.add(n)
        table[n] = i
    out = np.empty((len(names), 10), dtype=np.int64)
    for j, n in enumerate(names):
        if n not in table:
            raise DataError(f"image {n} has no row in {path.name} for split {split}", label_path, j + 1)
        out[j] = votes[table[n]]
    return out, sorted(dup)


def ferplus_counts(root: str | Path, label_mode: str = "majority", num_classes: int = 8,
                   vote_source: str = "auto") -> dict:
    """Per-split and per-class counts (no images loaded)."""
    out: dict = {"dataset": "ferplus", "label_mode": label_mode, "num_classes": num_classes, "splits": {}}
    for split in SPLITS:
        s = load_ferplus(root, split, label_mode, num_classes, vote_source=vote_source, load_images=False)
        out["splits"][split] = {"total": len(s), "per_class": s.class_counts()}
    return out
