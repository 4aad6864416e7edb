"""Fault injection for weights and the SR cache (issue "Reliability", items 2, 4, 6).

Weights files that are not weights, strict / partial backbone checkpoints, pretrained weights without a
network, and damaged SR cache entries: each fault is built in ``tmp_path`` and must give a one-line
:class:`ConfigError` (exit code 2 through the command line) before any data is read, or, for the SR
cache, a rebuild byte-identical to a clean build.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import timm
import torch

from fer_study import cli, sr_cache
from fer_study.config import TrainConfig, make_config
from fer_study.errors import ConfigError
from fer_study.models import backbones
from fer_study.models import weights as hub
from fer_study.models.classifier import ModelConfig, NeuralResizerClassifier
from fer_study.models.dic import DIC
from fer_study.models.facesr import FaceSR
from fer_study.models.sr import SuperResolver, check_sr_weights, save_facesr
from fer_study.sr_cache import build_sr_cache

#: A tiny ViT as a timm model and as config overrides (the demo's conv stem cannot take weights).
VIT = {"backbone": "vit_tiny_patch16_224", "img_size": 32, "backbone_kwargs": {"depth": 2}}
VIT_SET = ["model.stem=patch", "model.backbone=vit_tiny_patch16_224", "model.img_size=32",
           'model.backbone_kwargs={"depth": 2}']


def _vit_state(num_classes: int = 0) -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    m = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=num_classes, img_size=32, depth=2)
    return {k: v.clone() for k, v in m.state_dict().items()}


def _facesr_file(path: Path) -> Path:
    torch.manual_seed(0)
    return save_facesr(FaceSR(scale=2, nf=8, blocks=1), path)


def _cli(args: list[str], capsys) -> tuple[int, str]:
    """``fer-study`` in this process: (exit code, the stderr line)."""
    rc = cli.main(args)
    err = capsys.readouterr().err.strip()
    return rc, err


# ---- weights files that are not weights ------------------------------------------------------------
def _text(p: Path) -> None:
    p.write_text("these are not weights\n")


def _random(p: Path) -> None:
    p.write_bytes(np.random.default_rng(0).bytes(4096))


def _random_pickle_head(p: Path) -> None:  # starts like a pickle, then garbage
    p.write_bytes(b"\x80\x02" + np.random.default_rng(1).bytes(4096))


def _empty(p: Path) -> None:
    p.write_bytes(b"")


def _truncated(p: Path) -> None:
    full = _facesr_file(p.with_name("full.pt")).read_bytes()
    p.write_bytes(full[: len(full) // 2])


def _a_list(p: Path) -> None:
    torch.save([1, 2, 3], p)


def _facesr_bare_state(p: Path) -> None:  # another network's state dict
    torch.save(FaceSR(scale=2, nf=8, blocks=1).state_dict(), p)


def _vit_for_dic(p: Path) -> None:
    torch.save({"state_dict": _vit_state()}, p)


def _small_dic(p: Path) -> None:  # DIC's keys, other shapes
    torch.save(DIC(num_features=8, num_groups=2, num_steps=2, hg_num_feature=32, num_fusion_block=1).state_dict(), p)


def _junk_safetensors(p: Path) -> None:
    p.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json}......")


def _npz_without_vit(p: Path) -> None:
    with open(p, "wb") as f:
        np.savez(f, a=np.zeros(3), b=np.ones(2))


NOT_A_CHECKPOINT = "not a PyTorch checkpoint"
BAD_SR = [  # backend, file name, builder, what the message must say
    ("facesr", "text.pt", _text, "not a PyTorch checkpoint (neither a zip archive nor a pickle"),
    ("facesr", "random.pt", _random, NOT_A_CHECKPOINT),
    ("facesr", "pickle_head.pt", _random_pickle_head, NOT_A_CHECKPOINT),
    ("facesr", "empty.pt", _empty, "empty file (0 bytes); expected a facesr checkpoint"),
    ("facesr", "truncated.pt", _truncated, "not a PyTorch checkpoint (a truncated or damaged zip archive"),
    ("facesr", "list.pt", _a_list, "holds a list, not a facesr checkpoint"),
    ("facesr", "bare.pt", _facesr_bare_state, "not a facesr checkpoint (kind None"),
    ("dic", "text.pth", _text, NOT_A_CHECKPOINT),
    ("dic", "random.pth", _random, NOT_A_CHECKPOINT),
    ("dic", "empty.pth", _empty, "empty file (0 bytes); expected the Helen x8 DIC checkpoint"),
    ("dic", "truncated.pth", _truncated, "not a PyTorch checkpoint (a truncated or damaged zip archive"),
    ("dic", "facesr.pth", _facesr_bare_state, "DIC checkpoint with 0 of 296 expected keys"),
    ("dic", "vit.pth", _vit_for_dic, "DIC checkpoint with 0 of 296 expected keys"),
    ("dic", "small_dic.pth", _small_dic, "wrong shape: conv_in.0.weight (file [32, 3, 3, 3], model [192, 3, 3, 3])"),
    ("spandrel", "text.pth", _text, "not a checkpoint spandrel can load"),
    ("spandrel", "empty.pth", _empty, "empty file (0 bytes)"),
]


@pytest.mark.parametrize("backend, name, build, message", BAD_SR, ids=[f"{b}-{n}" for b, n, _, _ in BAD_SR])
def test_bad_sr_weights_exit_2_before_any_data(tmp_path, monkeypatch, capsys, backend, name, build, message):
    if backend == "spandrel":
        pytest.importorskip("spandrel")
    bad = tmp_path / name
    build(bad)
    monkeypatch.chdir(tmp_path)
    rc, err = _cli(["train", "--profile", "demo", "--set", f"sr_backend={backend}", "--set", f"sr_weights={bad}"],
                   capsys)
    assert rc == 2, err
    assert err.startswith(f"error: sr_weights {bad}: ") and len(err.splitlines()) == 1, err
    assert message in err, err
    assert not (tmp_path / "results").exists() and not (tmp_path / "cache").exists()  # nothing was started
    with pytest.raises(ConfigError, match="sr_weights"):  # the loader says the same when validation was skipped
        SuperResolver(backend, bad, out_size=96)


BAD_BACKBONE = [
    ("text.pth", _text, "not a PyTorch checkpoint (neither a zip archive nor a pickle"),
    ("random.pth", _random, NOT_A_CHECKPOINT),
    ("empty.pth", _empty, "empty file (0 bytes); expected weights of vit_tiny_patch16_224"),
    ("truncated.pth", _truncated, "not a PyTorch checkpoint (a truncated or damaged zip archive"),
    ("list.pth", _a_list, "holds a list, not a state dict"),
    ("facesr.pth", _facesr_bare_state, "not weights of vit_tiny_patch16_224: none of its 30 keys"),
    ("junk.safetensors", _junk_safetensors, "not a safetensors file"),
    ("other.npz", _npz_without_vit, "no JAX/Flax ViT layout"),
]


@pytest.mark.parametrize("name, build, message", BAD_BACKBONE, ids=[n for n, _, _ in BAD_BACKBONE])
def test_bad_backbone_checkpoint_exit_2_before_any_data(tmp_path, monkeypatch, capsys, name, build, message):
    bad = tmp_path / name
    build(bad)
    monkeypatch.chdir(tmp_path)
    args = ["train", "--profile", "demo"]
    for s in [*VIT_SET, f"model.checkpoint={bad}"]:
        args += ["--set", s]
    rc, err = _cli(args, capsys)
    assert rc == 2, err
    assert err.startswith(f"error: model.checkpoint {bad}: ") and len(err.splitlines()) == 1, err
    assert message in err, err
    assert not (tmp_path / "results").exists() and not (tmp_path / "cache").exists()
    with pytest.raises(ConfigError, match="model.checkpoint"):  # and so does the model, built directly
        NeuralResizerClassifier(ModelConfig(**VIT, up="bilinear", down="none", checkpoint=str(bad)))


def test_good_weights_pass_validation(tmp_path):
    f = _facesr_file(tmp_path / "facesr.pt")
    torch.save(DIC().state_dict(), tmp_path / "dic.pth")
    torch.save(_vit_state(), tmp_path / "vit.pth")
    make_config("demo", [f"sr_weights={f}"])
    make_config("demo", ["sr_backend=dic", f"sr_weights={tmp_path / 'dic.pth'}"])
    check_sr_weights("dic", tmp_path / "dic.pth")
    cfg = make_config("demo", [*VIT_SET, f"model.checkpoint={tmp_path / 'vit.pth'}"])
    replace(cfg, sr_weights=str(f)).validate()  # every file
    assert cfg.model.checkpoint_strict


def test_checkpoint_folder_without_this_backbone_is_a_config_error(tmp_path):
    torch.save(_vit_state(), tmp_path / "swin_tiny_patch4_window7_224.pth")
    with pytest.raises(ConfigError, match=r"model.checkpoint=.*has no weights for vit_tiny_patch16_224"):
        make_config("demo", [*VIT_SET, f"model.checkpoint={tmp_path}"])
    torch.save(_vit_state(), tmp_path / "vit_tiny_patch16_224.pth")
    assert make_config("demo", [*VIT_SET, f"model.checkpoint={tmp_path}"]).model.checkpoint == str(tmp_path)


def test_conv_stem_with_weights_is_a_config_error(tmp_path):
    torch.save(_vit_state(), tmp_path / "vit.pth")
    with pytest.raises(ConfigError, match="model.stem=conv: .*cannot take pretrained weights"):
        make_config("demo", [f"model.checkpoint={tmp_path / 'vit.pth'}"])  # the demo's stem is conv
    with pytest.raises(ConfigError, match="model.stem=conv: .*model.pretrained=true"):
        make_config("demo", ["model.pretrained=true"])


# ---- strict and partial backbone checkpoints -------------------------------------------------------
def _renamed(sd: dict) -> None:
    sd["blocks.1.attn.proj.weight_old"] = sd.pop("blocks.1.attn.proj.weight")


def _dropped(sd: dict) -> None:
    sd.pop("blocks.0.norm1.bias")


def _wrong_shape(sd: dict) -> None:
    sd["blocks.0.mlp.fc1.bias"] = torch.zeros(7)


def _seven_dropped(sd: dict) -> None:
    for k in [k for k in sd if k.startswith("blocks.1.")][:7]:
        sd.pop(k)


PARTIAL = [  # mutation, counts in the strict message, names it shows, report (loaded, missing, unexpected, mismatched)
    (_renamed, "1 missing, 1 unexpected and 0 wrong-shape keys",
     ["missing: blocks.1.attn.proj.weight", "unexpected: blocks.1.attn.proj.weight_old"], (29, 1, 1, 0)),
    (_dropped, "1 missing, 0 unexpected and 0 wrong-shape keys", ["missing: blocks.0.norm1.bias"], (29, 1, 0, 0)),
    (_wrong_shape, "0 missing, 0 unexpected and 1 wrong-shape keys",
     ["wrong shape: blocks.0.mlp.fc1.bias (file [7], model [768])"], (29, 0, 0, 1)),
    (_seven_dropped, "7 missing, 0 unexpected and 0 wrong-shape keys", [", ... (7 in all)"], (23, 7, 0, 0)),
]


@pytest.mark.parametrize("mutate, counts, names, report", PARTIAL, ids=[p[0].__name__.strip("_") for p in PARTIAL])
def test_strict_checkpoint_fails_partial_loads_and_reports(tmp_path, monkeypatch, capsys, mutate, counts, names,
                                                           report):
    sd = _vit_state()
    mutate(sd)
    p = tmp_path / "vit.pth"
    torch.save(sd, p)
    # strict (the default): validation, the model and the command line all refuse it
    with pytest.raises(ConfigError) as e:
        make_config("demo", [*VIT_SET, f"model.checkpoint={p}"])
    msg = str(e.value)
    assert msg.startswith(f"model.checkpoint {p}: does not match vit_tiny_patch16_224: {counts}"), msg
    assert all(n in msg for n in names), msg
    assert f"{report[0]} of 30 keys match" in msg and "model.checkpoint_strict=false" in msg
    if mutate is _seven_dropped:
        assert msg.count("blocks.1.") == 5  # up to 5 names of each
    with pytest.raises(ConfigError, match="does not match"):
        NeuralResizerClassifier(ModelConfig(**VIT, up="bilinear", down="none", checkpoint=str(p)))
    monkeypatch.chdir(tmp_path)
    args = ["train", "--profile", "demo"]
    for s in [*VIT_SET, f"model.checkpoint={p}"]:
        args += ["--set", s]
    rc, err = _cli(args, capsys)
    assert rc == 2 and counts in err, err
    # checkpoint_strict=false: what matches loads, the rest keeps its initialisation; the report says so
    cfg = make_config("demo", [*VIT_SET, f"model.checkpoint={p}", "model.checkpoint_strict=false"])
    m = NeuralResizerClassifier(replace(cfg.model, up="bilinear", down="none"))
    r = m.weights_report
    assert (r["loaded"], r["missing"], r["unexpected"], r["mismatched"]) == report, r
    assert r["strict"] is False and r["file"] == str(p) and r["expected"] == 30
    own = m.backbone.state_dict()
    for k in own:
        if k in sd and sd[k].shape == own[k].shape:
            assert torch.equal(own[k], sd[k]), k
    assert (len(r["missing_keys"]), len(r["unexpected_keys"]), len(r["mismatched_keys"])) == report[1:]
    assert all(k not in sd or sd[k].shape != own[k].shape for k in r["missing_keys"] + r["mismatched_keys"])


def test_clean_checkpoint_loads_strictly_head_keys_ignored(tmp_path):
    full = _vit_state(num_classes=1000)  # a timm checkpoint keeps its ImageNet head
    torch.save(full, tmp_path / "with_head.pth")
    m = NeuralResizerClassifier(ModelConfig(**VIT, up="bilinear", down="none", checkpoint=str(tmp_path / "with_head.pth")))
    r = m.weights_report
    assert (r["loaded"], r["missing"], r["unexpected"], r["mismatched"], r["head_keys_ignored"]) == (30, 0, 0, 0, 2)
    for k, v in m.backbone.state_dict().items():
        assert torch.equal(v, full[k]), k
    assert NeuralResizerClassifier(ModelConfig(**VIT, up="bilinear", down="none")).weights_report is None


def test_wrong_network_is_an_error_even_when_not_strict(tmp_path):
    torch.manual_seed(0)
    swin = timm.create_model("swin_tiny_patch4_window7_224", pretrained=False, num_classes=0, img_size=32,
                             patch_size=4, window_size=4, embed_dim=24, depths=(1, 1), num_heads=(1, 2))
    torch.save(swin.state_dict(), tmp_path / "swin.pth")
    for strict in ("true", "false"):
        with pytest.raises(ConfigError, match=r"model.checkpoint .*swin.pth: (not weights of|does not match) "
                                              r"vit_tiny_patch16_224"):
            make_config("demo", [*VIT_SET, f"model.checkpoint={tmp_path / 'swin.pth'}",
                                 f"model.checkpoint_strict={strict}"])
    torch.save(FaceSR().state_dict(), tmp_path / "facesr.pth")
    with pytest.raises(ConfigError, match="not weights of vit_tiny_patch16_224: none of its 30 keys"):
        make_config("demo", [*VIT_SET, f"model.checkpoint={tmp_path / 'facesr.pth'}", "model.checkpoint_strict=false"])


def test_original_swin_release_converts_and_loads_strictly(tmp_path):
    """The Microsoft Swin .pth layout (downsample at the end of a stage, ``head.``, index buffers, under
    ``model``) goes through timm's converter, as ``timm.create_model(pretrained=True)`` would do it."""
    kw = dict(img_size=32, patch_size=4, window_size=4, embed_dim=24, depths=(1, 1, 1), num_heads=(1, 2, 2))
    torch.manual_seed(0)
    sd = timm.create_model("swin_tiny_patch4_window7_224", pretrained=False, num_classes=10, **kw).state_dict()
    old = {re.sub(r"layers\.(\d+)\.downsample", lambda m: f"layers.{int(m.group(1)) - 1}.downsample", k)
           .replace("head.fc.", "head."): v for k, v in sd.items()}
    old["layers.0.blocks.0.attn.relative_position_index"] = torch.zeros(16, 16, dtype=torch.long)
    torch.save({"model": old}, tmp_path / "swin_release.pth")
    bb = backbones.build_backbone("swin_tiny_patch4_window7_224", checkpoint=tmp_path / "swin_release.pth", **kw)
    r = bb.load_report
    assert (r["loaded"], r["missing"], r["unexpected"], r["mismatched"], r["head_keys_ignored"]) == (51, 0, 0, 0, 2)
    for k, v in bb.model.state_dict().items():
        assert torch.equal(v, sd[k]), k
    with pytest.raises(ConfigError, match=r"swin.npz: a JAX/Flax .npz loads into ViT models only"):
        np.savez(tmp_path / "swin.npz", a=np.zeros(2))
        backbones.check_backbone_checkpoint(tmp_path / "swin.npz", "swin_tiny_patch4_window7_224", **kw)


# ---- run ids: the new field at its default changes none --------------------------------------------
#: computed by the code before ``model.checkpoint_strict`` existed (commit 69e934d)
OLD_IDS = {"demo": "synthfer-tiny_swin_s-sr-ltr-fpdls-s0-22f1bbe627",
           "paper": "ferplus-swin_b-sr-ltr-stn-fpdls-s1111-84c0de32b8"}


#: The profiles' values when OLD_IDS were pinned (the demo's recipe changed with SynthFER generator 3, and
#: it stopped scoring the authors' protocol later).
OLD_RECIPE: dict[str, dict] = {"demo": {"lr": 1.5e-3, "batch_size": 16, "epochs": 3, "warmup_steps": 50,
                                        "authors_protocol": True},
                               "paper": {}}


def test_checkpoint_strict_default_keeps_run_ids():
    for profile, rid in OLD_IDS.items():
        cfg = make_config(profile, OLD_RECIPE[profile])
        assert cfg.model.checkpoint_strict is True
        assert cfg.run_id() == rid
        d = cfg.to_dict()
        del d["model"]["checkpoint_strict"]  # a config.json written before the field existed
        old = TrainConfig.from_dict(d)
        assert old.model.checkpoint_strict is True and old.run_id() == rid
    assert make_config("demo", {**OLD_RECIPE["demo"], "model.checkpoint_strict": False}).run_id() != OLD_IDS["demo"]
    assert make_config("demo", ["model.checkpoint_strict=false"]).model.checkpoint_strict is False
    assert make_config("demo", ["checkpoint_strict=no"]).model.checkpoint_strict is False  # bare model key


# ---- pretrained weights without a network ----------------------------------------------------------
@pytest.fixture
def no_hub(tmp_path, monkeypatch):
    """An empty Hugging Face cache, HF_HUB_OFFLINE unset, no probe remembered."""
    import huggingface_hub.constants as c

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(c, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(c, "HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setattr(hub, "_PROBES", {})
    return tmp_path / "hf"


PRETRAINED = ["model.stem=patch", "model.backbone=deit_tiny_patch16_224", "model.pretrained=true"]


def test_pretrained_unreachable_hub_fails_fast_with_the_offline_options(no_hub, monkeypatch):
    monkeypatch.setattr(hub, "hub_unreachable", lambda timeout=3.0: "huggingface.co:443 cannot be reached (test)")
    with pytest.raises(ConfigError) as e:
        make_config("demo", PRETRAINED)
    msg = str(e.value)
    assert msg.startswith("model.pretrained=true: the pretrained weights of deit_tiny_patch16_224 "
                          "(timm/deit_tiny_patch16_224.fb_in1k) are not in the local Hugging Face cache")
    for part in ("cannot be reached (test)", "--set model.checkpoint=PATH", "HF_HUB_OFFLINE=1",
                 "model.pretrained=false"):
        assert part in msg, msg
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # offline by choice: no probe at all
    monkeypatch.setattr(hub, "hub_unreachable", lambda timeout=3.0: pytest.fail("probed"))
    with pytest.raises(ConfigError, match="HF_HUB_OFFLINE=1 forbids downloading them"):
        make_config("demo", PRETRAINED)


def test_pretrained_cached_or_reachable_passes(no_hub, monkeypatch):
    monkeypatch.setattr(hub, "hub_unreachable", lambda timeout=3.0: None)
    assert hub.check_pretrained("deit_tiny_patch16_224") == "hub"
    make_config("demo", PRETRAINED)
    snap = no_hub / "models--timm--deit_tiny_patch16_224.fb_in1k" / "snapshots" / ("0" * 40)
    snap.mkdir(parents=True)
    (snap / "model.safetensors").write_bytes(b"x")
    (no_hub / "models--timm--deit_tiny_patch16_224.fb_in1k" / "refs").mkdir()
    (no_hub / "models--timm--deit_tiny_patch16_224.fb_in1k" / "refs" / "main").write_text("0" * 40)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(hub, "hub_unreachable", lambda timeout=3.0: pytest.fail("probed"))
    assert backbones.pretrained_cached("deit_tiny_patch16_224.fb_in1k") == str(snap / "model.safetensors")
    assert hub.check_pretrained("deit_tiny_patch16_224") == "cache"
    make_config("demo", PRETRAINED)
    with pytest.raises(ConfigError, match="timm has no pretrained weights"):
        hub.check_pretrained("vit_tiny_patch16_224.nosuchtag")


def test_pretrained_without_network_real_probe_exit_2_within_seconds(no_hub, monkeypatch, capsys):
    if hub.hub_unreachable() is None:
        pytest.skip("the hub is reachable from here")
    hub._PROBES.clear()
    monkeypatch.chdir(no_hub.parent)
    t = time.perf_counter()
    rc, err = _cli(["train", "--profile", "demo", *sum((["--set", s] for s in PRETRAINED), [])], capsys)
    assert time.perf_counter() - t < 15
    assert rc == 2 and "cannot be reached" in err and "--set model.checkpoint=PATH" in err, err
    assert not (no_hub.parent / "results").exists()
    hub._PROBES.clear()
    t = time.perf_counter()
    with pytest.raises(ConfigError, match="cannot be reached"):  # building the backbone directly fails as fast
        backbones.build_backbone("deit_tiny_patch16_224", pretrained=True)
    assert time.perf_counter() - t < 15


# ---- SR cache: damage, rebuild, interrupted builds -------------------------------------------------
IMGS = np.random.default_rng(0).integers(0, 256, (23, 48, 48), dtype=np.uint8)


@pytest.fixture
def small_chunks(monkeypatch):
    monkeypatch.setattr(sr_cache, "CHUNK_BYTES", 16384)  # several chunks per entry


def _sr() -> SuperResolver:
    return SuperResolver("bicubic", out_size=64)


@pytest.fixture
def clean(tmp_path, small_chunks) -> tuple[bytes, dict]:
    """The .npy bytes and json of a clean build."""
    arr, meta = build_sr_cache(IMGS, _sr(), tmp_path / "clean", batch_size=5, progress=False)
    npy = tmp_path / "clean" / f"{meta['key']}.npy"
    assert meta["bytes"] == npy.stat().st_size and len(meta["checksum"]["chunks"]) == -(-meta["bytes"] // 16384)
    return npy.read_bytes(), meta


def _entry(d: Path, meta: dict) -> tuple[Path, Path]:
    return d / f"{meta['key']}.npy", d / f"{meta['key']}.json"


def _assert_same(d: Path, clean: tuple[bytes, dict]) -> None:
    npy, js = _entry(d, clean[1])
    assert npy.read_bytes() == clean[0]
    got = json.loads(js.read_text())
    assert got == clean[1]  # done, bytes and the same checksum list


def _truncate_half(npy: Path) -> None:
    b = npy.read_bytes()
    npy.write_bytes(b[: len(b) // 2])


def _zero_second_half(npy: Path) -> None:
    b = bytearray(npy.read_bytes())
    b[len(b) // 2:] = bytes(len(b) - len(b) // 2)
    npy.write_bytes(bytes(b))


def _flip_one_byte(npy: Path) -> None:
    b = bytearray(npy.read_bytes())
    b[-1] ^= 0xFF
    npy.write_bytes(bytes(b))


def _header_lies(npy: Path) -> None:
    with open(npy, "r+b") as f:  # another shape in the header
        head = f.read(128).replace(b"(23, 1, 64, 64)", b"(23, 1, 64, 32)")
        f.seek(0)
        f.write(head)


DAMAGE = [(_truncate_half, "truncated"), (_zero_second_half, "checksum mismatch"),
          (_flip_one_byte, "checksum mismatch in 1 of"), (_header_lies, "the .npy header says (23, 1, 64, 32)")]


@pytest.mark.parametrize("damage, reason", DAMAGE, ids=[d.__name__.strip("_") for d, _ in DAMAGE])
def test_damaged_finished_entry_is_rebuilt_byte_identical(tmp_path, clean, damage, reason):
    d = tmp_path / "c"
    _, meta = build_sr_cache(IMGS, _sr(), d, batch_size=5, progress=False)
    npy, _ = _entry(d, meta)
    damage(npy)
    with pytest.warns(RuntimeWarning, match=f"SR cache entry {re.escape(str(npy))}: {re.escape(reason)}.*rebuilding "
                                            "it from scratch"):
        arr, meta2 = build_sr_cache(IMGS, _sr(), d, batch_size=7, progress=False)
    assert meta2["done"] == len(IMGS)
    _assert_same(d, clean)
    np.testing.assert_array_equal(arr, np.load(tmp_path / "clean" / npy.name))


def test_unreadable_json_is_rebuilt(tmp_path, clean):
    d = tmp_path / "c"
    _, meta = build_sr_cache(IMGS, _sr(), d, batch_size=5, progress=False)
    _, js = _entry(d, meta)
    js.write_text('{"key": "trunc')
    with pytest.warns(RuntimeWarning, match="unreadable json"):
        build_sr_cache(IMGS, _sr(), d, batch_size=5, progress=False)
    _assert_same(d, clean)
    js.write_text(json.dumps({**clean[1], "n": 99}))
    with pytest.warns(RuntimeWarning, match="its json does not describe this entry"):
        build_sr_cache(IMGS, _sr(), d, batch_size=5, progress=False)
    _assert_same(d, clean)


def test_partial_entry_shorter_than_its_header_is_rebuilt(tmp_path, clean):
    d = tmp_path / "c"
    _, meta = build_sr_cache(IMGS, _sr(), d, batch_size=5, stop_after=10, progress=False)
    assert meta["done"] == 10 and "checksum" not in meta
    npy, _ = _entry(d, meta)
    _truncate_half(npy)
    with pytest.warns(RuntimeWarning, match="truncated: .* bytes, its header needs"):
        build_sr_cache(IMGS, _sr(), d, batch_size=5, progress=False)
    _assert_same(d, clean)


def test_entry_finished_before_checksums_gets_one_without_rebuild(tmp_path, clean, recwarn):
    d = tmp_path / "c"
    _, meta = build_sr_cache(IMGS, _sr(), d, batch_size=5, progress=False)
    npy, js = _entry(d, meta)
    old = {k: v for k, v in meta.items() if k not in ("bytes", "checksum")}
    js.write_text(json.dumps(old))
    before = npy.stat().st_mtime_ns
    _, meta2 = build_sr_cache(IMGS, _sr(), d, batch_size=5, progress=False)
    assert not [w for w in recwarn if issubclass(w.category, RuntimeWarning)]
    assert npy.stat().st_mtime_ns == before  # read, not rebuilt
    _assert_same(d, clean)
    _truncate_half(npy)  # and a truncated old entry is rebuilt like any other
    with pytest.warns(RuntimeWarning, match="truncated"):
        build_sr_cache(IMGS, _sr(), d, batch_size=5, progress=False)
    _assert_same(d, clean)


@pytest.mark.parametrize("seed", range(4))
def test_killed_build_resumes_byte_identical(tmp_path, clean, seed):
    """Interrupted at random points (``stop_after``, then an exception inside a batch), with other batch
    sizes on resume: the finished entry equals a clean build byte for byte."""
    rng = np.random.default_rng(seed)
    d = tmp_path / "c"
    n = len(IMGS)
    stops = sorted(int(s) for s in rng.choice(np.arange(1, n), size=2, replace=False))
    done = 0
    for stop in stops:
        _, meta = build_sr_cache(IMGS, _sr(), d, batch_size=int(rng.integers(1, 8)), stop_after=stop,
                                 progress=False)
        assert stop <= meta["done"] < n or meta["done"] == n
        assert meta["done"] >= done
        done = meta["done"]
    sr = _sr()
    calls = {"n": 0}
    real = sr.forward
    crash_at = int(rng.integers(1, min(3, -(-(n - done) // 3)) + 1)) if done < n else 1

    def dying(x: torch.Tensor) -> torch.Tensor:
        calls["n"] += 1
        if calls["n"] == crash_at:
            raise KeyboardInterrupt  # a kill inside a batch: nothing of it is recorded
        return real(x)

    sr.forward = dying  # type: ignore[method-assign]
    if done < n:
        with pytest.raises(KeyboardInterrupt):
            build_sr_cache(IMGS, sr, d, batch_size=3, progress=False)
        js = json.loads(_entry(d, clean[1])[1].read_text())
        assert js["done"] < n and "checksum" not in js
    build_sr_cache(IMGS, _sr(), d, batch_size=4, progress=False)
    _assert_same(d, clean)


def _build_slowly(d: str, calls_file: str, ready) -> None:  # noqa: ANN001 - a multiprocessing Barrier
    """A worker process: builds the entry with an SR that sleeps in every batch and counts its batches;
    both workers start building together (``ready``), so without the lock both would build."""
    sr = _sr()
    real = sr.forward

    def slow(x: torch.Tensor) -> torch.Tensor:
        with open(calls_file, "a") as f:
            f.write("x")
        time.sleep(0.2)
        return real(x)

    sr.forward = slow  # type: ignore[method-assign]
    ready.wait(60)
    build_sr_cache(IMGS, sr, d, batch_size=4, progress=False)


def test_two_processes_build_one_entry_once(tmp_path, clean):
    """Two workers that need the same entry at once (``--executor workers --jobs 2``): the entry lock makes
    the second wait and read the finished entry; it is built once (6 batches of 4, not 12) and equals a
    clean build byte for byte."""
    import multiprocessing as mp

    d, calls = tmp_path / "c", tmp_path / "calls"
    ctx = mp.get_context("spawn")  # fork after torch has run its thread pools can hang
    ready = ctx.Barrier(2)
    procs = [ctx.Process(target=_build_slowly, args=(str(d), str(calls), ready)) for _ in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        if p.exitcode is None:
            p.kill()
    assert [p.exitcode for p in procs] == [0, 0]
    assert calls.read_text() == "x" * 6
    npy, js = _entry(d, clean[1])
    assert npy.read_bytes() == clean[0]  # (the workers hash in their default chunks, not this test's small ones)
    assert json.loads(js.read_text())["done"] == len(IMGS)
