"""Class orders of the data sets (explicit, because a wrong order mislabels silently)."""

from __future__ import annotations

#: FERPlus order (fer2013new.csv / label.csv vote columns 0-7), used throughout the study.
FERPLUS_CLASSES: tuple[str, ...] = (
    "neutral", "happiness", "surprise", "sadness", "anger", "disgust", "fear", "contempt",
)
#: The two extra vote columns of FERPlus.
FERPLUS_EXTRA: tuple[str, ...] = ("unknown", "NF")
FERPLUS_VOTE_COLUMNS: tuple[str, ...] = FERPLUS_CLASSES + FERPLUS_EXTRA

#: RAF-DB basic, native order of labels 1..7 in list_patition_label.txt.
RAFDB_CLASSES: tuple[str, ...] = (
    "surprise", "fear", "disgust", "happiness", "sadness", "anger", "neutral",
)
#: RAF-DB native index -> FERPlus index (PSR's re-indexing).
RAFDB_TO_FERPLUS: tuple[int, ...] = (2, 6, 5, 1, 3, 4, 0)

#: FER2013 ``emotion`` column codes (fer2013.csv): 0 Angry .. 6 Neutral.
FER2013_CLASSES: tuple[str, ...] = ("anger", "disgust", "fear", "happiness", "sadness", "surprise", "neutral")


def ferplus_classes(num_classes: int) -> tuple[str, ...]:
    """FERPlus classes for 8 (all) or 7 (contempt dropped)."""
    if num_classes == 8:
        return FERPLUS_CLASSES
    if num_classes == 7:
        return FERPLUS_CLASSES[:7]
    raise ValueError(f"FERPlus has 8 or 7 classes, not {num_classes}")
