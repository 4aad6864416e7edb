"""Typed config values: the ``--set KEY=VALUE`` parser and the per-field checks.

A config dataclass declares what each field accepts next to the field, with :func:`option`
(``choices``, bounds ``ge``/``gt``/``le``/``lt``, ``path="file"`` / ``"file_or_dir"`` for paths that
must exist);
:func:`check_fields` enforces those declarations and the field types. :func:`parse_value` turns a
``--set`` string (or a papermill parameter) into a field's type, read from its annotation:
``int`` (strict), ``float``, ``bool`` (true/false/1/0/yes/no), ``str``, ``X | None`` (``none`` and
``null`` give None) and ``dict`` (JSON). Every failure is a one-line :class:`ConfigError`.
"""

from __future__ import annotations

import difflib
import json
import math
import types
import typing
from collections.abc import Collection, Iterable
from dataclasses import MISSING, field, fields
from pathlib import Path
from typing import Any

from fer_study.errors import ConfigError

NONE_WORDS = ("none", "null")
BOOL_WORDS = {"true": True, "false": False, "1": True, "0": False, "yes": True, "no": False}


def option(default: Any = MISSING, *, default_factory: Any = MISSING, choices: tuple | None = None,
           ge: float | None = None, gt: float | None = None, le: float | None = None, lt: float | None = None,
           path: str | None = None, note: str = "") -> Any:
    """A dataclass field with its allowed values declared in ``metadata`` (read by :func:`check_fields`)."""
    meta: dict[str, Any] = {k: v for k, v in (("choices", choices), ("ge", ge), ("gt", gt), ("le", le), ("lt", lt))
                            if v is not None}
    if path is not None:
        if path not in ("file", "file_or_dir"):
            raise ValueError(f"path must be 'file' or 'file_or_dir', not {path!r}")
        meta["path"] = path
    if note:
        meta["note"] = note
    return field(default=default, default_factory=default_factory, metadata=meta)


# ---- types ---------------------------------------------------------------------------------------
def _split_optional(tp: Any) -> tuple[Any, bool]:
    """``X | None`` -> (X, True); anything else -> (tp, False)."""
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1 and len(args) < len(typing.get_args(tp)):
            return args[0], True
    return tp, False


def _base(tp: Any) -> Any:
    return typing.get_origin(tp) or tp


def type_name(tp: Any) -> str:
    inner, optional = _split_optional(tp)
    name = {int: "an integer", float: "a number", bool: "a boolean (true/false/yes/no/1/0)", str: "a string",
            dict: "a JSON object"}.get(_base(inner), str(inner))
    return name + (" or none" if optional else "")


def _has_type(v: Any, tp: Any) -> bool:
    inner, optional = _split_optional(tp)
    if v is None:
        return optional
    t = _base(inner)
    if t is float:
        return isinstance(v, int | float) and not isinstance(v, bool)
    if t is int:
        return isinstance(v, int) and not isinstance(v, bool)
    return isinstance(v, t) if isinstance(t, type) else True


def parse_value(raw: Any, tp: Any, label: str) -> Any:
    """``raw`` (a string to parse, or a Python value) as the type ``tp``; ``label`` names it in errors
    (``--set epochs=ten``)."""
    inner, optional = _split_optional(tp)
    t = _base(inner)
    if isinstance(raw, str) and optional and raw.strip().lower() in NONE_WORDS:
        return None
    if not isinstance(raw, str) or t is str:
        if t is float and _has_type(raw, float):
            return float(raw)
        if _has_type(raw, tp):
            return raw
        raise ConfigError(f"{label}: expected {type_name(tp)}")
    s = raw.strip()
    try:
        if t is bool:
            return BOOL_WORDS[s.lower()]
        if t is int:
            return int(s)
        if t is float:
            v = float(s)
            if math.isfinite(v):
                return v
        elif t is dict:
            v = json.loads(s)
            if isinstance(v, dict):
                return v
    except (KeyError, ValueError):
        pass
    raise ConfigError(f"{label}: expected {type_name(tp)}")


# ---- checks --------------------------------------------------------------------------------------
def _fmt(v: float) -> str:
    return f"{v:g}" if isinstance(v, float) else str(v)


def expected(meta: typing.Mapping[str, Any], tp: Any) -> str:
    """What a field accepts, in words: ``an integer >= 2 (BatchNorm needs 2 or more)``."""
    if "choices" in meta:
        text = "one of " + ", ".join(map(str, meta["choices"]))
    else:
        bounds = [f"{op} {_fmt(meta[k])}" for k, op in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<"))
                  if k in meta]
        text = " ".join([type_name(tp), " and ".join(bounds)]).strip()
    return text + (f" ({meta['note']})" if "note" in meta else "")


def _in_bounds(v: Any, meta: typing.Mapping[str, Any]) -> bool:
    tests = {"ge": lambda b: v >= b, "gt": lambda b: v > b, "le": lambda b: v <= b, "lt": lambda b: v < b}
    return all(test(meta[k]) for k, test in tests.items() if k in meta)  # NaN fails every bound


def check_fields(obj: Any, prefix: str = "") -> None:
    """Types, choices and bounds of every field of the dataclass ``obj`` (``None`` passes for ``X | None``;
    nested dataclasses are skipped); ``prefix`` goes before the field names in the errors (``model.``)."""
    hints = typing.get_type_hints(type(obj))
    for f in fields(obj):
        v, tp, key = getattr(obj, f.name), hints[f.name], prefix + f.name
        if is_dataclass_type(tp):
            continue
        if not _has_type(v, tp):
            raise ConfigError(f"{key}={v!r}: expected {type_name(tp)}")
        m = f.metadata
        if v is None or not m:
            continue
        if ("choices" in m and v not in m["choices"]) or not _in_bounds(v, m):
            raise ConfigError(f"{key}={v}: expected {expected(m, tp)}")


def check_paths(obj: Any, prefix: str = "", which: bool | Collection[str] = True) -> None:
    """The ``path`` fields of ``obj`` that are set must exist (as a file, or a file or folder): all of them
    (``which=True``), none (``False``) or those whose key (with ``prefix``) is in ``which``. Existence
    only: nothing is loaded."""
    for f in fields(obj):
        v, key, kind = getattr(obj, f.name), prefix + f.name, f.metadata.get("path")
        wanted = which is True or (not isinstance(which, bool) and key in which)
        if kind is None or v is None or not wanted:
            continue
        if not (Path(v).is_file() or (kind == "file_or_dir" and Path(v).is_dir())):
            note = f.metadata.get("note")
            raise ConfigError(f"{key}={v}: no such file" + (" or folder" if kind == "file_or_dir" else "")
                              + (f" ({note})" if note else ""))


def is_dataclass_type(tp: Any) -> bool:
    return isinstance(tp, type) and hasattr(tp, "__dataclass_fields__")


def unknown_key(key: str, valid: Iterable[str], label: str = "") -> ConfigError:
    """``unknown key 'epoch'; did you mean 'epochs'?`` (the closest valid keys, by difflib)."""
    close = difflib.get_close_matches(key, list(valid), n=3, cutoff=0.6)
    names = [repr(c) for c in close]
    hint = f"; did you mean {' or '.join([', '.join(names[:-1]), names[-1]] if len(names) > 1 else names)}?" if close else ""
    return ConfigError(f"{label + ': ' if label else ''}unknown key {key!r}{hint}")
