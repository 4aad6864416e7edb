"""Weights files and pretrained weights of the backbones: finding, reading, checking and loading them.

Reading: :func:`read_weights_file` opens a ``.safetensors`` file or ``torch.save`` output (``.pth``/
``.bin``) safely, :func:`state_dict_in` takes the state dict out of a checkpoint; JAX/Flax ``.npz``
archives (augreg ViT) are checked by structure and loaded by timm. Anything else is a
:class:`~fer_study.errors.ConfigError` naming the file and what was expected.

Checking and loading: :func:`diff_keys` compares key -> shape maps (:class:`KeyDiff`: matched, missing,
unexpected, wrong-shape keys); :func:`load_backbone_weights` loads a file into a headless timm model
(timm's converter of the family applied, strict by default) and :func:`check_backbone_checkpoint` does
the same comparison against a meta-device skeleton, before any data is read. :func:`checkpoint_file`
finds a backbone's file in a folder; :func:`save_backbone_checkpoint` writes one.

Pretrained weights (``model.pretrained=true``): :func:`check_pretrained` says whether timm's weights come
from the local Hugging Face cache (:func:`pretrained_cached`) or the hub, and fails within seconds when
neither (:func:`hub_offline`, :func:`hub_unreachable`).
"""

from __future__ import annotations

import argparse
import functools
import os
import re
import socket
import threading
import time
import urllib.parse
import urllib.request
import zipfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from fer_study.errors import ConfigError

WEIGHT_SUFFIXES = (".safetensors", ".pth", ".bin", ".npz")


def checkpoint_file(checkpoint: str | Path, timm_name: str) -> Path:
    """``checkpoint`` itself when it is a file; for a folder, the file in it named by the timm model
    (``swin_base_patch4_window7_224.ms_in22k_ft_in1k.safetensors``, or without the tag), so one folder
    serves every backbone of a grid."""
    p = Path(checkpoint)
    if p.is_file():
        return p
    if p.is_dir():
        names = [timm_name, timm_name.split(".")[0]]
        for n in dict.fromkeys(names):
            for suf in WEIGHT_SUFFIXES:
                if (p / f"{n}{suf}").is_file():
                    return p / f"{n}{suf}"
        raise FileNotFoundError(f"backbone checkpoint folder {p} has no weights for {timm_name}: looked for "
                                f"{' or '.join(dict.fromkeys(names))} with suffix {', '.join(WEIGHT_SUFFIXES)}")
    raise FileNotFoundError(f"backbone checkpoint not found: {p}")


# ---- weights files ---------------------------------------------------------------------------------
def error_reason(e: BaseException) -> str:
    """``Type: first sentence`` of an exception, on one line (torch's long weights_only text trimmed)."""
    msg = str(e)
    if "WeightsUnpickler error:" in msg:
        msg = msg.split("WeightsUnpickler error:", 1)[1].split("Check the documentation", 1)[0]
    elif msg.startswith("Weights only load failed"):  # torch's advice paragraph, then the reason
        reasons = [p for p in (q.strip() for q in msg.split("\n\n")[1:])
                   if p and not p.startswith("Check the documentation")]
        msg = reasons[0] if reasons else msg
    msg = " ".join(msg.split())
    first = msg.split(". ", 1)[0]
    return f"{type(e).__name__}: {first[:200]}" if first else type(e).__name__


def few_names(keys: list[str], n: int = 5) -> str:
    return ", ".join(keys[:n]) + (f", ... ({len(keys)} in all)" if len(keys) > n else "")


def read_weights_file(path: str | Path, label: str, expected: str) -> Any:
    """The object saved in a weights file: ``.safetensors`` (a dict of tensors) or ``torch.save`` output
    (``weights_only``, memory-mapped when zipped: reading the keys costs little). A file that is none of
    these (empty, text, random bytes, truncated) is a :class:`ConfigError` naming ``label``, the file and
    what was ``expected``."""
    path = Path(path)
    try:
        size = path.stat().st_size
    except OSError as e:
        raise ConfigError(f"{label} {path}: cannot be read ({error_reason(e)}); expected {expected}") from None
    if size == 0:
        raise ConfigError(f"{label} {path}: empty file (0 bytes); expected {expected}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path), device="cpu")
        except Exception as e:  # noqa: BLE001 - SafetensorError, OSError, ...
            raise ConfigError(f"{label} {path}: not a safetensors file ({error_reason(e)}); expected {expected}") from None
    with open(path, "rb") as f:
        head = f.read(8)
    zipped = head.startswith(b"PK\x03\x04")
    if not zipped and not head.startswith(b"\x80"):
        raise ConfigError(f"{label} {path}: not a PyTorch checkpoint (neither a zip archive nor a pickle: it "
                          f"starts with {head!r}); expected {expected}")
    if zipped and not zipfile.is_zipfile(path):
        raise ConfigError(f"{label} {path}: not a PyTorch checkpoint (a truncated or damaged zip archive: no "
                          f"central directory; {size} bytes); expected {expected}")
    for mmap in dict.fromkeys((zipped, False)):  # without mmap torch says more about a damaged file
        try:
            with torch.serialization.safe_globals([argparse.Namespace]):  # timm training checkpoints keep their args
                return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
        except Exception as e:  # noqa: BLE001 - UnpicklingError, RuntimeError (zip), EOFError, KeyError ...
            err = e
    raise ConfigError(f"{label} {path}: not a PyTorch checkpoint ({error_reason(err)}); expected {expected}") from None


def state_dict_in(obj: Any, label: str, path: str | Path, expected: str,
                  wrappers: tuple[str, ...] = ("state_dict_ema", "model_ema", "state_dict", "model")) -> dict:
    """The tensors of a loaded checkpoint: a bare state dict or one under the first of ``wrappers`` present
    (timm's order: EMA weights first), ``module.`` / ``_orig_mod.`` prefixes removed."""
    sd = obj
    if isinstance(sd, Mapping):
        for k in wrappers:
            if isinstance(sd.get(k), Mapping):
                sd = sd[k]
                break
    if not isinstance(sd, Mapping):
        raise ConfigError(f"{label} {path}: holds a {type(sd).__name__}, not a state dict; expected {expected}")
    out = {}
    for k, v in sd.items():
        if isinstance(k, str) and isinstance(v, torch.Tensor):
            while k.startswith(("module.", "_orig_mod.")):
                k = k.split(".", 1)[1]
            out[k] = v
    if not out:
        raise ConfigError(f"{label} {path}: holds no tensors (keys: {few_names([str(k) for k in sd])}); "
                          f"expected {expected}")
    return out


@dataclass
class KeyDiff:
    """How a state dict fits a model: keys that match, missing, unexpected and of the wrong shape."""

    expected: int  # the model's keys
    matched: list[str]
    missing: list[str]
    unexpected: list[str]
    mismatched: list[tuple[str, tuple[int, ...], tuple[int, ...]]]  # key, file shape, model shape
    ignored: list[str]  # classifier-head keys of the file (the backbone has no head)

    @property
    def exact(self) -> bool:
        return not (self.missing or self.unexpected or self.mismatched)

    def counts(self) -> str:
        return (f"{len(self.missing)} missing, {len(self.unexpected)} unexpected and {len(self.mismatched)} "
                "wrong-shape keys")

    def details(self, n: int = 5) -> str:
        """Up to ``n`` names of each kind of problem."""
        parts = []
        if self.missing:
            parts.append(f"missing: {few_names(self.missing, n)}")
        if self.unexpected:
            parts.append(f"unexpected: {few_names(self.unexpected, n)}")
        if self.mismatched:
            shown = [f"{k} (file {list(a)}, model {list(b)})" for k, a, b in self.mismatched]
            parts.append(f"wrong shape: {few_names(shown, n)}")
        return "; ".join(parts)

    def report(self, path: str | Path, strict: bool, fmt: str, n: int = 20) -> dict[str, Any]:
        """Counts and (up to ``n``) names of what a load took and left, for a run's metadata."""
        return {"file": str(path), "format": fmt, "strict": strict, "expected": self.expected,
                "loaded": len(self.matched), "missing": len(self.missing), "unexpected": len(self.unexpected),
                "mismatched": len(self.mismatched), "head_keys_ignored": len(self.ignored),
                "missing_keys": self.missing[:n], "unexpected_keys": self.unexpected[:n],
                "mismatched_keys": [k for k, _, _ in self.mismatched[:n]]}


def diff_keys(own: Mapping[str, tuple[int, ...]], found: Mapping[str, tuple[int, ...]],
              ignore: tuple[str, ...] = ()) -> KeyDiff:
    """Compare key -> shape maps of a model (``own``) and a file (``found``); keys under an ``ignore``
    prefix (the classifier head) count neither as missing nor as unexpected."""
    def ignored(k: str) -> bool:
        return any(k == p or k.startswith(p + ".") for p in ignore)

    both = [k for k in own if k in found]
    return KeyDiff(
        expected=sum(not ignored(k) for k in own),
        matched=[k for k in both if tuple(own[k]) == tuple(found[k])],
        missing=[k for k in own if k not in found and not ignored(k)],
        unexpected=[k for k in found if k not in own and not ignored(k)],
        mismatched=[(k, tuple(found[k]), tuple(own[k])) for k in both if tuple(own[k]) != tuple(found[k])],
        ignored=[k for k in found if k not in own and ignored(k)])


def shapes(sd: Mapping[str, torch.Tensor]) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in sd.items()}


def _expected_backbone(timm_name: str) -> str:
    return f"weights of {timm_name} (a .pth/.bin/.safetensors state dict, or an augreg .npz for ViT)"


def _head_names(model: nn.Module) -> tuple[str, ...]:
    """The classifier keys of the pretrained configuration (``head``, ``head.fc``): absent from the
    headless backbone (``num_classes=0``), present in most weights files."""
    c = getattr(model, "pretrained_cfg", {}).get("classifier") or ()
    return (c,) if isinstance(c, str) else tuple(c)


def _filter_fn(model: nn.Module) -> Callable | None:
    """timm's ``checkpoint_filter_fn`` of the model's family (converts original releases, e.g. the Swin
    .pth or resized position embeddings), as ``timm.create_model(pretrained=True)`` applies it."""
    import importlib

    import timm.models

    arch = getattr(model, "pretrained_cfg", {}).get("architecture")
    try:
        module = importlib.import_module(timm.models.model_entrypoint(arch).__module__)
    except Exception:  # noqa: BLE001 - unknown architecture: no converter
        return None
    fn = getattr(module, "checkpoint_filter_fn", None)
    if fn is not None and module.__name__.endswith(".deit"):
        fn = functools.partial(fn, adapt_layer_scale=True)  # as timm's deit factory passes it
    return fn


def _fit_state_dict(model: nn.Module, path: Path, timm_name: str, label: str) -> tuple[KeyDiff, dict]:
    """The key diff of the weights in ``path`` against ``model`` (after timm's converter when the file
    does not match as it is) and the state dict to load from."""
    raw = state_dict_in(read_weights_file(path, label, _expected_backbone(timm_name)), label, path,
                        _expected_backbone(timm_name))
    own = shapes(model.state_dict())
    heads = _head_names(model)
    diff, sd = diff_keys(own, shapes(raw), heads), raw
    fn = _filter_fn(model) if not diff.exact else None
    if fn is not None:
        try:
            conv = fn(dict(raw), model)
        except Exception:  # noqa: BLE001 - another network's file can break the converter: compare it as it is
            conv = None
        if isinstance(conv, Mapping):
            conv = {k: v for k, v in conv.items() if isinstance(v, torch.Tensor)}
            diff, sd = diff_keys(own, shapes(conv), heads), conv
    return diff, sd


def _fit_npz(model: nn.Module, path: Path, timm_name: str, label: str) -> KeyDiff:
    """The structure of a JAX/Flax ``.npz`` (augreg ViT) against ``model``: encoder blocks the model has
    but the file lacks (missing), blocks beyond the model's depth (unexpected)."""
    import numpy as np

    expected = _expected_backbone(timm_name)
    if not hasattr(model, "load_pretrained") or not hasattr(model, "blocks"):
        raise ConfigError(f"{label} {path}: a JAX/Flax .npz loads into ViT models only, not {timm_name}; "
                          "expected a .pth/.bin/.safetensors state dict")
    if path.stat().st_size == 0:
        raise ConfigError(f"{label} {path}: empty file (0 bytes); expected {expected}")
    try:
        w = np.load(path, allow_pickle=False)
    except Exception as e:  # noqa: BLE001 - zip, format and pickle errors
        raise ConfigError(f"{label} {path}: not a NumPy .npz archive ({error_reason(e)}); expected {expected}") from None
    if not isinstance(w, np.lib.npyio.NpzFile):
        raise ConfigError(f"{label} {path}: a single NumPy array, not an .npz archive; expected {expected}")
    with w:
        files = list(w.files)
    if not any(k.endswith("embedding/kernel") for k in files):
        raise ConfigError(f"{label} {path}: no JAX/Flax ViT layout (no embedding/kernel among {few_names(files)}); "
                          f"expected {expected}")
    found = {int(m.group(1)) for k in files if (m := re.search(r"Transformer/encoderblock_(\d+)/", k))}
    depth = len(model.blocks)
    own = list(model.state_dict())
    missing = [k for k in own if (m := re.match(r"blocks\.(\d+)\.", k)) and found and int(m.group(1)) not in found]
    unexpected = [k for k in files if (m := re.search(r"Transformer/encoderblock_(\d+)/", k)) and int(m.group(1)) >= depth]
    return KeyDiff(len(own), [k for k in own if k not in missing], missing, unexpected, [], [])


def _fit(model: nn.Module, path: Path, timm_name: str, strict: bool, label: str, load: bool) -> dict[str, Any]:
    npz = path.suffix == ".npz"
    if npz:
        diff, sd = _fit_npz(model, path, timm_name, label), {}
    else:
        diff, sd = _fit_state_dict(model, path, timm_name, label)
    if not diff.matched:
        raise ConfigError(f"{label} {path}: not weights of {timm_name}: none of its {diff.expected} keys is in "
                          f"the file with the right shape ({diff.details()})")
    whole = npz and bool(diff.missing)  # timm's .npz loader cannot skip what the file lacks
    if (strict and not diff.exact) or whole:
        raise ConfigError(f"{label} {path}: does not match {timm_name}: {diff.counts()} ({diff.details()}); "
                          f"{len(diff.matched)} of {diff.expected} keys match"
                          + (" (an .npz loads whole or not at all)" if whole else
                             ". Set model.checkpoint_strict=false to load those anyway"))
    if load:
        if npz:
            try:
                model.load_pretrained(str(path))
            except Exception as e:  # noqa: BLE001 - KeyError, shape RuntimeError, ValueError
                raise ConfigError(f"{label} {path}: cannot be loaded into {timm_name} ({error_reason(e)})") from None
        else:
            model.load_state_dict({k: sd[k] for k in diff.matched}, strict=False)
    return diff.report(path, strict, "npz" if npz else "safetensors" if path.suffix == ".safetensors" else "torch")


def load_backbone_weights(model: nn.Module, path: str | Path, timm_name: str, strict: bool = True,
                          label: str = "model.checkpoint") -> dict[str, Any]:
    """Load a weights file into the headless timm ``model`` (timm's converter applied, classifier keys
    ignored). ``strict``: any missing, unexpected or wrong-shape key is a :class:`ConfigError` (file,
    counts, up to 5 names of each); otherwise the matching keys load. A file with no matching key is an
    error either way. Returns the load report (:meth:`KeyDiff.report`: counts loaded / missing /
    unexpected / mismatched)."""
    return _fit(model, Path(path), timm_name, strict, label, load=True)


def _skeleton(name: str, timm_name: str, kw: dict) -> nn.Module:
    """The headless model on the meta device (keys and shapes, no memory, no init cost)."""
    import timm

    try:
        with torch.device("meta"):
            return timm.create_model(timm_name, pretrained=False, num_classes=0, **kw)
    except Exception:  # noqa: BLE001 - a constructor that needs real tensors: build it on the CPU
        try:
            return timm.create_model(timm_name, pretrained=False, num_classes=0, **kw)
        except Exception as e:  # noqa: BLE001
            raise ConfigError(f"model.backbone={name}: {timm_name} cannot be built with {kw} ({error_reason(e)})") from None


_CHECKED: dict[tuple, dict[str, Any]] = {}


def check_backbone_checkpoint(checkpoint: str | Path, name: str, img_size: int | None = None,
                              strict: bool = True, label: str = "model.checkpoint", **kwargs) -> dict[str, Any]:
    """Validation of ``model.checkpoint`` before any data is read: the file (or this backbone's file in
    the folder) holds weights that fit the backbone, compared key by key with a meta-device skeleton
    (nothing is loaded into a model; a checked file is remembered by path, size and mtime). Returns
    the load report the load will give; errors as :func:`load_backbone_weights`."""
    from fer_study.models.backbones import _timm_args

    timm_name, kw = _timm_args(name, img_size, kwargs)
    try:
        path = checkpoint_file(checkpoint, timm_name)
    except FileNotFoundError as e:
        raise ConfigError(f"{label}={checkpoint}: {e}") from None
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns, timm_name, repr(sorted(kw.items())), strict)
    if key not in _CHECKED:
        _CHECKED[key] = _fit(_skeleton(name, timm_name, kw), path, timm_name, strict, label, load=False)
    return dict(_CHECKED[key])


# ---- pretrained weights: the hub or its local cache --------------------------------------------------
def hub_offline() -> bool:
    """``HF_HUB_OFFLINE`` is set (in the environment, or as huggingface_hub read it at import)."""
    if os.environ.get("HF_HUB_OFFLINE", "").strip().upper() in ("1", "ON", "YES", "TRUE"):
        return True
    try:
        import huggingface_hub.constants as c
    except ImportError:  # pragma: no cover
        return False
    return bool(c.HF_HUB_OFFLINE)


def _pretrained_source(timm_name: str) -> tuple[str | None, tuple[str, ...], str | None]:
    """(hub repo with ``@revision`` if any, candidate file names, url) of timm's pretrained weights."""
    if timm_name.startswith(("hf-hub:", "hf_hub:")):
        return timm_name.split(":", 1)[1], ("model.safetensors", "pytorch_model.bin", "open_clip_model.safetensors",
                                            "open_clip_pytorch_model.bin"), None
    from timm.models import get_pretrained_cfg

    cfg = get_pretrained_cfg(timm_name)
    if cfg is None:
        return None, (), None
    files = ("model.safetensors", "pytorch_model.bin")
    if cfg.hf_hub_filename:
        files = (cfg.hf_hub_filename,) + (("model.safetensors",) if cfg.hf_hub_filename == "pytorch_model.bin" else ())
    return cfg.hf_hub_id, files, cfg.url or None


def pretrained_cached(timm_name: str) -> str | None:
    """The local file of timm's pretrained weights for ``timm_name`` (Hugging Face cache, or torch's hub
    folder for weights known only by url), or None."""
    repo, files, url = _pretrained_source(timm_name)
    if repo:
        from huggingface_hub import try_to_load_from_cache

        repo_id, _, rev = repo.partition("@")
        for f in files:
            hit = try_to_load_from_cache(repo_id, f, revision=rev or None)
            if isinstance(hit, str):
                return hit
        return None
    if url:
        p = Path(torch.hub.get_dir()) / "checkpoints" / Path(urllib.parse.urlparse(url).path).name
        return str(p) if p.is_file() else None
    return None


_PROBES: dict[tuple[str, int], tuple[float, str | None]] = {}


def hub_unreachable(timeout: float = 3.0) -> str | None:
    """None when the hub's host (or the HTTPS proxy in use) accepts a TCP connection within ``timeout``
    seconds (name resolution included), else why not. Remembered for a minute."""
    import huggingface_hub.constants as c

    url = urllib.parse.urlparse(c.ENDPOINT)
    host, port = url.hostname or "huggingface.co", url.port or (443 if url.scheme == "https" else 80)
    proxy = urllib.request.getproxies().get(url.scheme)
    if proxy and not urllib.request.proxy_bypass(host):
        pu = urllib.parse.urlparse(proxy if "://" in proxy else f"http://{proxy}")
        host, port = pu.hostname or host, pu.port or (443 if pu.scheme == "https" else 80)
    hit = _PROBES.get((host, port))
    if hit is not None and time.monotonic() - hit[0] < 60:
        return hit[1]
    out: list[str | None] = []

    def probe() -> None:
        try:
            socket.create_connection((host, port), timeout=timeout).close()
            out.append(None)
        except OSError as e:
            out.append(error_reason(e))

    t = threading.Thread(target=probe, daemon=True)  # name resolution ignores the socket timeout
    t.start()
    t.join(timeout + 1)
    why = out[0] if out else f"no answer within {timeout + 1:.0f} s"
    why = None if why is None else f"{host}:{port} cannot be reached ({why})"
    _PROBES[(host, port)] = (time.monotonic(), why)
    return why


def check_pretrained(name: str, label: str = "model.pretrained=true") -> str:
    """Where timm's pretrained weights of backbone ``name`` will come from: ``cache`` (already local),
    ``hub`` (reachable now) or ``local`` (a ``local-dir:`` name). Offline and not cached is a
    :class:`ConfigError` within seconds naming the offline options."""
    from fer_study.models.backbones import _timm_args

    timm_name, _ = _timm_args(name, None, {})
    if timm_name.startswith("local-dir:"):
        return "local"
    try:
        repo, _, url = _pretrained_source(timm_name)
    except RuntimeError as e:  # timm: an invalid pretrained tag
        raise ConfigError(f"{label}: timm has no pretrained weights for {timm_name} ({e}); use "
                          "model.pretrained=false or `--set model.checkpoint=PATH`") from None
    if repo is None and url is None:
        raise ConfigError(f"{label}: timm has no pretrained weights for {timm_name}; use model.pretrained=false "
                          "or `--set model.checkpoint=PATH`")
    if pretrained_cached(timm_name):
        return "cache"
    why = "HF_HUB_OFFLINE=1 forbids downloading them" if hub_offline() else hub_unreachable()
    if why is None:
        return "hub"
    import huggingface_hub.constants as c

    arch = timm_name.split(".")[0].split(":")[-1]
    raise ConfigError(
        f"{label}: the pretrained weights of {timm_name} ({repo or url}) are not in the local Hugging Face cache "
        f"({c.HF_HUB_CACHE}) and {why}. Offline: pass local weights with `--set model.checkpoint=PATH` (a "
        f"weights file, or a folder holding {arch}.safetensors/.pth), or pre-fill the Hugging Face cache (e.g. "
        f"`hf download {repo or url}` where there is a network, HF_HOME pointing at it) and set "
        "HF_HUB_OFFLINE=1; or use model.pretrained=false (random init)")


def _force_hub_offline() -> None:
    """Make huggingface_hub use only its local cache (fast failure instead of network time-outs)."""
    try:
        import huggingface_hub.constants as c

        c.HF_HUB_OFFLINE = True
        import huggingface_hub.file_download as fd

        if hasattr(fd, "HF_HUB_OFFLINE"):
            fd.HF_HUB_OFFLINE = True
    except ImportError:  # pragma: no cover
        pass


def save_backbone_checkpoint(model: nn.Module, path: str | Path) -> Path:
    """Write a state-dict checkpoint that ``build_backbone(checkpoint=...)`` reads."""
    from fer_study.io import torch_save_atomic

    return torch_save_atomic(model.state_dict(), path)
