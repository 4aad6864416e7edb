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
unknown or not-a-face are dropped. Validation and test always use ``majority``. Dropped rows are
counted by reason in :attr:`FERSplit.dropped` (keys :data:`DROP_REASONS`).

Checks on input (each failure is a :class:`~fer_study.errors.DataError` naming file and row):
votes are integers in 0..:data:`MAX_VOTES` with a row total <= :data:`MAX_VOTES`; an image is
listed once per label.csv; every listed PNG decodes completely (PIL's ``LOAD_TRUNCATED_IMAGES``
is switched off while reading); in the csv form the image names of fer2013new.csv follow its rows
(:func:`check_row_alignment`). Colour PNGs are converted to grey, counted and warned about once
per split.
"""

from __future__ import annotations

import csv
import re
import warnings
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np

from fer_study.classes import FERPLUS_VOTE_COLUMNS, ferplus_classes
from fer_study.errors import DataError
from fer_study.io import memo_by_file

if TYPE_CHECKING:  # pragma: no cover
    from PIL import Image as PILImage

LABEL_MODES = ("majority", "probability", "crossentropy", "multi_target")
SPLITS = ("train", "valid", "test")
USAGE_TO_SPLIT = {"Training": "train", "PublicTest": "valid", "PrivateTest": "test"}
SPLIT_FOLDERS = {"train": "FER2013Train", "valid": "FER2013Valid", "test": "FER2013Test"}
FER2013_HEADER = ["emotion", "pixels", "Usage"]
FER2013NEW_HEADER = ["Usage", "Image name", *FERPLUS_VOTE_COLUMNS]
NUM_PIXELS = 48 * 48
#: Largest plausible vote count, per class and per row (FERPlus has 10 taggers per image).
MAX_VOTES = 1000
#: Why a row is dropped by the label mode (keys of :attr:`FERSplit.dropped`, always all present):
#: ``no_votes`` no class has 2+ votes (single votes are removed first; all-zero rows included);
#: ``no_majority`` majority mode, no class has more than half of the votes; ``low_coverage`` the
#: other modes, the chosen classes cover <= 50 % of the votes; ``unknown`` / ``not_face`` the
#: unknown / NF column wins; ``contempt`` contempt wins in the 7-class setting.
DROP_REASONS = ("no_votes", "no_majority", "low_coverage", "unknown", "not_face", "contempt")
_NAME_RE = re.compile(r"fer(\d+)\.png")
_INT_RE = re.compile(r"\d+(?:\.0*)?")  # "3" or an integral float written as "3.0"
_COLOUR_MODES = ("RGB", "RGBA", "RGBX", "P", "PA", "CMYK", "YCbCr", "LAB", "HSV")

LabelMode = Literal["majority", "probability", "crossentropy", "multi_target"]


@dataclass
class FERSplit:
    """One split of a FER data set, in the data set's class order.

    images: (N, H, W) uint8 (grayscale) or (N, H, W, 3) uint8; ``None`` when not loaded.
    votes: (N, 10) raw annotator votes (FERPlus) or one-hot (single-label data sets).
    label: (N,) hard label (argmax of the processed target).
    target: (N, C) soft target of the label mode (one-hot in majority mode).
    source: per image, ``file:row`` or the image file name it came from.
    dropped: rows read but dropped by the label mode, per reason (:data:`DROP_REASONS`).
    colour_images: images read that were colour (channels differ) and were converted to grey.
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
    dropped: dict[str, int] = field(default_factory=dict)
    colour_images: int = 0

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
    return _process_votes(votes, mode)[0]


def _process_votes(votes: np.ndarray, mode: str) -> tuple[np.ndarray, str | None]:
    """:func:`process_votes` plus why the rule failed (``no_votes``, ``no_majority``,
    ``low_coverage``), or ``None`` when it produced a distribution of its own."""
    if mode not in LABEL_MODES:
        raise ValueError(f"unknown label mode {mode!r}; choose from {LABEL_MODES}")
    raw = [float(v) for v in votes]
    size = len(raw)
    unknown = [0.0] * size
    unknown[-2] = 1.0
    raw = [0.0 if v < 1.0 + 1e-12 else v for v in raw]  # single votes are outliers
    total = sum(raw)
    emotion = [0.0] * size
    failed: str | None = None
    if mode == "majority":
        maxval = max(raw)
        if maxval > 0.5 * total:
            emotion[int(np.argmax(raw))] = maxval
        else:
            emotion, failed = unknown, "no_majority"
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
            emotion, failed = unknown, "low_coverage"
    else:  # multi_target
        for i in range(size):
            if raw[i] >= 0.3 * total:
                emotion[i] = raw[i]
        if sum(emotion) <= 0.5 * total:
            emotion, failed = unknown, "low_coverage"
    if failed is not None and total <= 0:
        failed = "no_votes"
    s = sum(emotion)
    return np.asarray([e / s for e in emotion], dtype=np.float64), failed


def _targets(votes: np.ndarray, mode: str,
             num_classes: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, int]]:
    """Process all vote rows: (keep mask, hard labels, soft targets of kept rows, drops per reason)."""
    keep = np.zeros(len(votes), dtype=bool)
    labels, targets = [], []
    dropped = dict.fromkeys(DROP_REASONS, 0)
    for i, v in enumerate(votes):
        dist, failed = _process_votes(v, mode)
        idx = int(np.argmax(dist))
        if idx >= 8:  # rule failed, or unknown / not-a-face won: dropped
            dropped[failed or ("unknown" if idx == 8 else "not_face")] += 1
            continue
        emo = dist[:8]
        emo = emo / emo.sum()
        if num_classes == 7:
            if idx == 7 or emo[:7].sum() <= 0:  # contempt images are dropped in the 7-class setting
                dropped["contempt"] += 1
                continue
            emo = emo[:7]
            emo = emo / emo.sum()
        keep[i] = True
        labels.append(int(np.argmax(emo)))
        targets.append(emo)
    c = num_classes
    return (keep, np.asarray(labels, dtype=np.int64), np.asarray(targets, dtype=np.float32).reshape(-1, c),
            dropped)


def _read_csv_rows(path: Path) -> list[list[str]]:
    if not path.is_file():
        raise DataError("file not found", path)
    with path.open(newline="") as f:
        return list(csv.reader(f))


def _parse_votes(row: list[str], path: Path, rowno: int, start: int) -> list[int]:
    """The 10 vote counts at ``row[start:]``: integers ("3", or "3.0") in 0..MAX_VOTES, sum <= MAX_VOTES."""
    cells = row[start:start + 10]
    if len(cells) != 10:
        raise DataError(f"expected 10 vote columns, found {len(cells)}", path, rowno)
    votes = []
    for j, c in enumerate(cells):
        where = f"column {start + j + 1} ({FERPLUS_VOTE_COLUMNS[j]})"
        text = c.strip()
        if not (text.isascii() and _INT_RE.fullmatch(text)):
            raise DataError(f"{where}: vote count {c!r} is not a non-negative integer", path, rowno)
        v = int(text.split(".")[0])
        if v > MAX_VOTES:
            shown = text if len(text) <= 20 else text[:20] + "..."
            raise DataError(f"{where}: vote count {shown} is implausible, expected at most {MAX_VOTES} "
                            "(FERPlus has 10 taggers per image)", path, rowno)
        votes.append(v)
    if sum(votes) > MAX_VOTES:
        raise DataError(f"vote counts sum to {sum(votes)}, expected at most {MAX_VOTES} "
                        "(FERPlus has 10 taggers per image)", path, rowno)
    return votes


#: fer2013.csv / fer2013new.csv are parsed once per process (the three splits of a run, the runs of a
#: worker); files under 1 MiB are re-read (tests rewrite small files within one mtime tick).
_memo_csv = memo_by_file(min_bytes=1 << 20, max_entries=4)


@_memo_csv
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


@_memo_csv
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


def check_row_alignment(names: list[str], new_path: Path,
                        old_path: Path | None = None) -> list[tuple[int, str]]:
    """Check that fer2013new.csv's image names follow its rows, so that it is aligned with fer2013.csv.

    A name ``ferK.png`` numbers the FER2013 row it was made from, but the numbering is not the row
    index: rows with an empty name (dropped by FERPlus) sometimes take a number and sometimes not
    (in the official file the offset grows to 85). So the rule is: the next named row after a named
    row with number K must have a number in K+1 .. K+1+E, where E is the number of rows between them
    with an empty name or an out-of-order duplicate name (exactly K+1 for adjacent rows). A name out
    of this sequence is accepted only when the same name occurs twice in the file (FERPlus's four
    duplicate names); those rows are returned as (file row, name). A missing, extra or moved named
    row is a DataError naming both files and the row; a missing row with an empty name that took no
    number cannot be seen from the names.
    """
    other = "fer2013.csv" if old_path is None else str(old_path)
    seen = Counter(n for n in names if n)
    exceptions: list[tuple[int, str]] = []
    prev_k, prev_row, empties = -1, 0, 0
    prev_name = ""
    for i, n in enumerate(names):
        if not n:
            empties += 1
            continue
        m = _NAME_RE.fullmatch(n)
        if m is None:
            raise DataError(f"image name {n!r} is not of the form ferNNNNNNN.png (expected an empty name or "
                            "the FERPlus name of the FER2013 image on this row)", new_path, i + 2)
        k = int(m.group(1))
        lo, hi = prev_k + 1, prev_k + 1 + empties
        if not lo <= k <= hi:
            if seen[n] > 1:  # a duplicate name, out of order: may or may not take a number
                exceptions.append((i + 2, n))
                empties += 1
                continue
            want = f"fer{lo:07d}.png" if lo == hi else f"a name from fer{lo:07d}.png to fer{hi:07d}.png"
            after = f"after {prev_name} on row {prev_row}" if prev_name else "as the first named row"
            raise DataError(
                f"image name {n} is out of row order: {after} expected {want}; {new_path.name} must "
                f"follow {other} row by row, so a row is missing, extra or moved near here", new_path, i + 2)
        prev_k, prev_row, prev_name, empties = k, i + 2, n, 0
    return exceptions


def read_label_csv(path: Path) -> tuple[list[str], np.ndarray]:
    """Read a generator ``label.csv`` (no header): (image names, votes (N, 10)); names must be unique."""
    rows = _read_csv_rows(path)
    names, votes = [], []
    first: dict[str, int] = {}
    for i, row in enumerate(rows, start=1):
        if len(row) != 12:
            raise DataError(f"expected 12 columns (name, box, 10 votes), found {len(row)}", path, i)
        if row[0] in first:
            raise DataError(f"image {row[0]} listed twice, on rows {first[row[0]]} and {i} "
                            "(expected each image once)", path, i)
        first[row[0]] = i
        names.append(row[0])
        votes.append(_parse_votes(row, path, i, 2))
    return names, np.asarray(votes, dtype=np.int64).reshape(-1, 10)


@contextmanager
def strict_image_decoding() -> Iterator[None]:
    """Within the block PIL raises on truncated image files: ``ImageFile.LOAD_TRUNCATED_IMAGES``
    (process-wide, often switched on by other code) is off, and restored afterwards."""
    from PIL import ImageFile

    before = ImageFile.LOAD_TRUNCATED_IMAGES
    ImageFile.LOAD_TRUNCATED_IMAGES = False
    try:
        yield
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = before


@contextmanager
def open_image(path: Path, rowref: tuple[Path | None, int | None], expected: str) -> Iterator[PILImage.Image]:
    """Open an existing image file and decode it fully under :func:`strict_image_decoding`; closed on exit.

    A file PIL cannot identify (empty, random bytes), a truncated or a corrupt one is a DataError
    naming the image and the label row ``rowref`` (file, row) that lists it; ``expected`` says what
    the file should be.
    """
    from PIL import Image, UnidentifiedImageError

    im = None
    try:
        with strict_image_decoding():
            im = Image.open(path)
            im.load()  # a full decode: truncation shows here, not later
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        if im is not None:
            im.close()
        if isinstance(e, UnidentifiedImageError):
            why = "empty file (0 bytes)" if path.stat().st_size == 0 else "not an image file PIL can identify"
        else:
            why = f"{type(e).__name__}: {e}"
        raise DataError(f"image {path.name} cannot be decoded ({why}); expected {expected} at {path}",
                        *rowref) from None
    with im:
        yield im


def _load_png(path: Path, rowref: tuple[Path, int]) -> tuple[np.ndarray, str]:
    """One FERPlus PNG as (48, 48) uint8 grey, and its kind: ``grey``, ``grey_rgb`` (colour mode,
    equal channels) or ``colour`` (channels differ; converted with PIL's ``convert("L")``)."""
    if not path.is_file():
        raise DataError(f"image {path.name} listed but not found at {path}", *rowref)
    kind = "grey"
    with open_image(path, rowref, "a complete 48x48 grey PNG") as im:
        if im.mode in _COLOUR_MODES:
            rgb = np.asarray(im.convert("RGB"))
            same = np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 1], rgb[..., 2])
            kind = "grey_rgb" if same else "colour"
        arr = np.asarray(im.convert("L"))
    if arr.shape != (48, 48):
        raise DataError(f"image {path.name} is {arr.shape[1]}x{arr.shape[0]}, expected 48x48", *rowref)
    return arr, kind


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
    colour = 0
    if form == "csv":
        new_path, old_path = root / "fer2013new.csv", root / "fer2013.csv"
        usage_new, names, votes = read_fer2013new(new_path)
        usage_old, images_all = read_fer2013(old_path, load_pixels=load_images)
        if len(usage_new) != len(usage_old):
            raise DataError(
                f"row count mismatch: fer2013.csv has {len(usage_old)} rows, fer2013new.csv "
                f"{len(usage_new)}; the two files are aligned by row and must match", new_path)
        dup_rows = check_row_alignment(names, new_path, old_path)
        extra_meta["duplicate_names_out_of_order"] = [f"{new_path.name}:{r}:{n}" for r, n in dup_rows]
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
            arrays, kinds = [], []
            for i, n in enumerate(names_l):
                a, kind = _load_png(folder / n, (label_path, i + 1))
                arrays.append(a)
                kinds.append(kind)
            images = np.stack(arrays)
            colour = kinds.count("colour")
            extra_meta["grey_rgb_images"] = kinds.count("grey_rgb")
            if colour:
                first = folder / names_l[kinds.index("colour")]
                warnings.warn(f"FERPlus {split} split ({label_path}): {colour} of {len(names_l)} images are "
                              f"colour, expected grey; converted to grey (first: {first})", stacklevel=2)
    else:
        raise ValueError(f"form must be auto, csv or folders, not {form!r}")

    keep, labels, targets, dropped = _targets(votes, mode, num_classes)
    idx = np.flatnonzero(keep)
    return FERSplit(
        name="ferplus", split=split, classes=classes, label=labels, target=targets,
        votes=votes[idx], source=[source[i] for i in idx],
        images=None if images is None else images[idx],
        meta={"root": str(root), "form": form, "label_mode": mode, "num_classes": num_classes,
              "vote_source": "fer2013new.csv" if form == "csv" else (
                  "label.csv" if vote_source == "auto" else vote_source),
              "rows_read": int(len(votes)), "rows_dropped": int(len(votes) - len(idx)), **extra_meta},
        dropped=dropped, colour_images=colour,
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
    """Per-split and per-class counts, and rows dropped by the label mode per reason (no images loaded)."""
    out: dict = {"dataset": "ferplus", "label_mode": label_mode, "num_classes": num_classes, "splits": {}}
    for split in SPLITS:
        s = load_ferplus(root, split, label_mode, num_classes, vote_source=vote_source, load_images=False)
        out["splits"][split] = {"total": len(s), "per_class": s.class_counts(), "dropped": dict(s.dropped)}
    return out
