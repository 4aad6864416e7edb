"""Typed ``--set`` overrides, validation before any data is read, per-data-set roots, run ids (no training)."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from dataclasses import fields
from pathlib import Path

import pytest
import torch

from fer_study.config import (
    AUGMENT_NAMES,
    NON_RESULT_KEYS,
    ROOT_KEYS,
    TrainConfig,
    apply_overrides,
    make_config,
    read_config,
)
from fer_study.errors import ConfigError, DataError, UserError
from fer_study.models.classifier import ModelConfig

ROOT = Path(__file__).resolve().parents[1]

# run ids computed by the code before data_root was split (and before typed parsing)
DEMO_ID = "synthfer-tiny_swin_s-sr-ltr-fpdls-s0-9e4ab71209"
PAPER_ID = "ferplus-swin_b-sr-ltr-stn-fpdls-s1111-55e005f2b0"
DEMO_X_ID = "synthfer-tiny_swin_s-sr-ltr-fpdls-s0-e4cba93d6c"  # old: make_config("demo", ["data_root=/x"])
PROPOSED_STN = {"model.up": "sr", "model.down": "ltr", "model.stn": "True", "loss": "fpdls"}


# ---- the command line: one line on stderr, exit code 2, before any data is read --------------------
@pytest.mark.parametrize("args, must_contain", [
    (["--set", "epochs=ten"], ["epochs", "ten", "integer"]),
    (["--set", "batch_size=-1"], ["batch_size", "-1", ">= 2"]),
    (["--set", "nosuchkey=1"], ["nosuchkey", "unknown key"]),
    (["--set", "epochs"], ["epochs", "KEY=VALUE"]),
    (["--set", "model.backbone=nope"], ["model.backbone", "nope"]),
    (["--set", "device=cuda"], ["device", "cuda"]),
    (["--config", "/nonexistent.json"], ["--config", "/nonexistent.json"]),
])
def test_cli_user_errors_are_one_line_and_exit_2(tmp_path, args, must_contain):
    if "device=cuda" in args and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    r = subprocess.run([sys.executable, "-m", "fer_study.cli", "train", "--profile", "demo", *args],
                       capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert r.returncode == 2, (r.returncode, r.stderr)
    lines = r.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr
    assert "Traceback" not in r.stderr
    for word in must_contain:
        assert word in lines[0], (word, lines[0])
    assert not (tmp_path / "results").exists() and not (tmp_path / "cache").exists()  # nothing was started


def test_cli_closed_stdout_ends_quietly():
    p = subprocess.Popen([sys.executable, "-m", "fer_study.cli", "--help"], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, cwd=ROOT)
    p.stdout.close()  # closed before the help is written, as `| head -0` would
    err = p.stderr.read().decode()
    assert p.wait(timeout=120) in (0, 141) and "Traceback" not in err and "BrokenPipe" not in err, err


def test_set_help_mentions_typed_parsing():
    from fer_study.cli import _add_profile

    p = argparse.ArgumentParser()
    _add_profile(p)
    text = " ".join(p.format_help().split())
    assert "model.KEY" in text and "none/null" in text and "JSON" in text and "boolean" in text


# ---- typed parsing -------------------------------------------------------------------------------
def test_typed_values():
    c = make_config("demo", ["sr_weights=none", "max_train=null", "amp=False", "lr=1e-3", "model.img_size=NULL",
                             'model.backbone_kwargs={"depth": 2}', "compile=YES", "epochs=7", "augment=none"])
    assert c.sr_weights is None and c.max_train is None and c.amp is False and c.compile is True
    assert c.lr == 1e-3 and isinstance(c.lr, float) and c.epochs == 7 and c.augment == "none"
    assert c.model.img_size is None and c.model.backbone_kwargs == {"depth": 2}
    assert make_config("demo", ["amp=0"]).amp is False and make_config("demo", ["amp=1"]).amp is True
    # bare model keys keep working
    assert make_config("demo", ["backbone=tiny_vit"]).model.backbone == "tiny_vit"


def test_python_values_are_accepted_as_they_are():
    c = make_config("demo", {"epochs": 3, "amp": False, "max_train": None, "lr": 1, "model.stn": True,
                             "model.backbone_kwargs": {"depth": 2}, "seed": "5"})
    assert c.epochs == 3 and c.amp is False and c.max_train is None and c.model.stn is True and c.seed == 5
    assert c.lr == 1.0 and isinstance(c.lr, float)  # an int for a float field
    assert c.model.backbone_kwargs == {"depth": 2}
    # an int given as 1 and as 1.0 is one run
    assert make_config("demo", {"gamma": 2}).run_id() == make_config("demo").run_id()


@pytest.mark.parametrize("override, message", [
    ("epochs=2.5", "--set epochs=2.5: expected an integer"),
    ("epochs=ten", "--set epochs=ten: expected an integer"),
    ("amp=maybe", "--set amp=maybe: expected a boolean"),
    ("lr=fast", "--set lr=fast: expected a number"),
    ("lr=nan", "--set lr=nan: expected a number"),
    ("epochs=none", "--set epochs=none: expected an integer"),
    ("model.backbone_kwargs=[1]", "--set model.backbone_kwargs=[1]: expected a JSON object"),
    ("model.backbone_kwargs={depth: 2}", "expected a JSON object"),
    ("epochs", "--set epochs: expected KEY=VALUE"),
    ("nosuchkey=1", "unknown key 'nosuchkey'"),
    ("epoch=3", "unknown key 'epoch'; did you mean 'epochs'?"),
    ("model.backbon=x", "did you mean 'model.backbone'"),
    ("data_root=/x", "data_root was split into ferplus_root / rafdb_root / synthfer_root"),
])
def test_parse_errors(override, message):
    with pytest.raises(ConfigError) as e:
        make_config("demo", [override])
    assert message in str(e.value) and "\n" not in str(e.value)


def test_wrong_python_types_are_errors():
    for bad in ({"epochs": True}, {"epochs": 2.0}, {"amp": 1}, {"device": 0}, {"model.backbone_kwargs": "x"}):
        with pytest.raises(ConfigError, match=next(iter(bad))):
            make_config("demo", bad)


# ---- choices and ranges ----------------------------------------------------------------------------
BAD = [("dataset", "imagenet"), ("label_mode", "soft"), ("sr_backend", "esrgan"), ("sr_precision", "fp16"),
       ("loss", "mse"), ("prior", "uniform"), ("optimizer", "sgd"), ("schedule", "step"), ("augment", "heavy"),
       ("device", "tpu"), ("device", "cuda0"), ("epochs", "0"), ("batch_size", "1"), ("lr", "0"), ("lr", "-1e-3"),
       ("weight_decay", "-0.1"), ("warmup_steps", "-1"), ("valid_fraction", "0"), ("valid_fraction", "1"),
       ("max_train", "0"), ("alpha", "1.5"), ("alpha", "-0.1"), ("gamma", "-1"), ("seed", "-1"),
       ("model.up", "nearest"), ("model.down", "area"), ("model.stn_placement", "middle"), ("model.head", "mlp3"),
       ("model.stem", "hybrid"), ("model.num_classes", "6"), ("model.input_size", "0"), ("model.sr_size", "0"),
       ("model.ltr_n", "0"), ("model.ltr_r", "0"), ("model.img_size", "0"), ("model.backbone", "nope")]


@pytest.mark.parametrize("key, value", BAD)
def test_choices_and_ranges(key, value):
    with pytest.raises(ConfigError) as e:
        make_config("demo", {key: value})
    msg = str(e.value)
    assert msg.startswith(f"{key}=") and "expected" in msg and "\n" not in msg, msg


@pytest.mark.parametrize("over", [{"augment": "none"}, {"device": "cpu"}, {"valid_fraction": "0.5"},
                                  {"alpha": "0"}, {"alpha": "1"}, {"gamma": "0"}, {"batch_size": "2"},
                                  {"model.backbone": "resnet18"}, {"model.num_classes": "7"}, {"loss": "focal"},
                                  {"model.backbone": "hf-hub:someone/model"}, {"schedule": "constant"}])
def test_valid_values_pass(over):
    make_config("demo", over)


def test_cuda_device_needs_cuda():
    if torch.cuda.is_available():
        with pytest.raises(ConfigError, match="device=cuda:99"):
            make_config("demo", ["device=cuda:99"])
    else:
        for d in ("cuda", "cuda:0"):
            with pytest.raises(ConfigError, match=f"device={d}: CUDA is not available"):
                make_config("demo", [f"device={d}"])


def test_rafdb_needs_seven_classes_and_the_psr_prior():
    with pytest.raises(ConfigError, match="model.num_classes=8: dataset=rafdb"):
        make_config("paper", ["dataset=rafdb"])
    with pytest.raises(ConfigError, match="prior=votes: dataset=rafdb needs prior=psr"):
        make_config("demo", ["dataset=rafdb", "model.num_classes=7"])  # the demo profile's prior is votes
    make_config("demo", ["dataset=rafdb", "model.num_classes=7", "prior=psr"])


def test_choice_tables_match_the_code():
    from fer_study.data.prior import PSR_FERPLUS_PRIOR
    from fer_study.data.tensors import AUGMENTS
    from fer_study.losses import build_loss
    from fer_study.models.sr import BACKENDS, PRECISIONS
    meta = {f.name: f.metadata for f in fields(TrainConfig)}
    assert AUGMENT_NAMES == tuple(AUGMENTS) == meta["augment"]["choices"]
    # oracle is no network: SynthFER's true renders replace the SR cache (fer_study.training.data)
    assert meta["sr_backend"]["choices"] == (*BACKENDS, "oracle") and meta["sr_precision"]["choices"] == PRECISIONS
    assert set(meta["dataset"]["choices"]) == set(ROOT_KEYS) == {"ferplus", "synthfer", "rafdb"}
    for name in meta["loss"]["choices"]:
        build_loss(name, prior=PSR_FERPLUS_PRIOR)


def test_model_config_validate_is_a_value_error():
    with pytest.raises(ValueError, match="model.up=nearest"):
        ModelConfig(up="nearest").validate()
    assert issubclass(ConfigError, UserError) and issubclass(ConfigError, ValueError)
    assert issubclass(DataError, UserError) and issubclass(DataError, ValueError)
    assert str(DataError("bad value", "f.csv", 3)) == "f.csv, row 3: bad value"


# ---- weights files: checked when named by the user, not when reading a stored config ----------------------
def test_weights_files_must_exist_when_set(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the demo profile's facesr weights are not here
    with pytest.raises(ConfigError, match="sr_weights=/nonexistent/w.pth: no such file"):
        make_config("demo", ["sr_weights=/nonexistent/w.pth"])
    with pytest.raises(ConfigError, match="model.checkpoint=/nonexistent/c.pth: no such file"):
        make_config("demo", ["model.checkpoint=/nonexistent/c.pth"])
    import timm

    from fer_study.models.facesr import FaceSR
    from fer_study.models.sr import save_facesr

    w = save_facesr(FaceSR(scale=2, nf=8, blocks=1), tmp_path / "w.pth")  # real weights: they are opened
    c = tmp_path / "deit_tiny_patch16_224.pth"
    torch.save(timm.create_model("deit_tiny_patch16_224", num_classes=0, img_size=48, patch_size=8, depth=4,
                                 embed_dim=96, num_heads=3).state_dict(), c)
    patch = ["model.stem=patch", "model.backbone=tiny_deit"]
    assert make_config("demo", [f"sr_weights={w}", f"model.checkpoint={c}", *patch]).sr_weights == str(w)
    assert make_config("demo", [f"model.checkpoint={tmp_path}", *patch]).model.checkpoint == str(tmp_path)  # a folder
    e = tmp_path / "empty.pth"
    e.write_bytes(b"")
    with pytest.raises(ConfigError, match="empty file"):
        make_config("demo", [f"sr_weights={e}"])
    with pytest.raises(ConfigError, match=r"sr_weights=.*: no such file \(the demo's facesr weights are trained"):
        make_config("demo", [f"sr_weights={tmp_path}"])  # SR weights are one file
    cfg = make_config("demo")  # a profile's own default path is not checked (the demo trains it first)
    with pytest.raises(ConfigError, match="sr_weights=cache/facesr/facesr.pt: no such file"):
        cfg.validate()
    cfg.validate(check_files=False)
    d = cfg.to_dict()
    d["model"]["checkpoint"] = "/gone.pth"
    assert TrainConfig.from_dict(d).model.checkpoint == "/gone.pth"  # an old run stays readable


# ---- data roots and run ids ------------------------------------------------------------------------
def test_data_root_is_the_active_data_sets_root():
    c = make_config("paper", ["ferplus_root=/f", "rafdb_root=/r", "synthfer_root=/s"])
    assert c.data_root == "/f"
    assert apply_overrides(c, ["dataset=rafdb", "model.num_classes=7"]).data_root == "/r"
    assert apply_overrides(c, ["dataset=synthfer"]).data_root == "/s"
    demo = make_config("demo")
    assert demo.data_root == "data/synthfer" and demo.rafdb_root == "data/synthfer_rafdb/basic"


def _legacy(cfg: TrainConfig) -> TrainConfig:
    """The same config as the code before the fidelity changes trained it (pipeline 1)."""
    from dataclasses import replace

    from fer_study.config import LATER_KEYS, LATER_MODEL_KEYS

    top = {k: v for k, v in LATER_KEYS.items() if k != "sr_precision"}
    return replace(cfg, **top, model=replace(cfg.model, **LATER_MODEL_KEYS))


def test_run_ids_of_the_new_pipeline_differ_from_the_old_ones():
    for cfg in (make_config("demo"), make_config("paper")):
        assert cfg.run_id() != _legacy(cfg).run_id()
        d = _legacy(cfg).to_dict()
        for k in ("pipeline", "drop_last", "rafdb_grey", "pdls_alpha"):
            d.pop(k)
        d["model"].pop("normalise"), d["model"].pop("stn_align_corners")
        assert TrainConfig.from_dict(d).run_id() == _legacy(cfg).run_id()  # an old config.json keeps its id
    with pytest.raises(ConfigError, match="pipeline"):
        apply_overrides(TrainConfig.from_dict({"epochs": 3}), ["epochs=4"])  # pipeline 1: read, not retrained


#: The demo profile's optimisation before the recipe change of generator 3 (the ids below were pinned then).
OLD_DEMO = {"lr": 1.5e-3, "batch_size": 16, "epochs": 3, "warmup_steps": 50}


def test_run_ids_unchanged_by_the_root_split():
    assert _legacy(make_config("demo", OLD_DEMO)).run_id() == DEMO_ID
    assert _legacy(make_config("paper")).run_id() == PAPER_ID
    assert _legacy(make_config("demo", {**OLD_DEMO, "synthfer_root": "/x"})).run_id() == DEMO_X_ID
    # grid rows: the demo's RAF-DB-layout twin now comes from the profile's rafdb_root
    raf = {**PROPOSED_STN, "model.backbone": "tiny_swin_l", "dataset": "rafdb", "model.num_classes": "7",
           "prior": "psr", "seed": "0"}
    assert _legacy(make_config("demo", {**OLD_DEMO, **raf})).run_id() == "rafdb-tiny_swin_l-sr-ltr-stn-fpdls-s0-07441dfe9e"
    assert (_legacy(make_config("demo", {**OLD_DEMO, **PROPOSED_STN, "model.backbone": "tiny_swin_b", "seed": "0"})).run_id()
            == "synthfer-tiny_swin_b-sr-ltr-stn-fpdls-s0-63acbaf490")
    vanilla = {"model.backbone": "vit_s", "loss": "ce", "model.up": "bilinear", "model.down": "none",
               "model.stn": "False", "seed": "1111"}
    assert _legacy(make_config("paper", vanilla)).run_id() == "ferplus-vit_s-bilinear-none-ce-s1111-865d479896"
    # what `--set data_root=...` gave before
    assert _legacy(make_config("paper", ["ferplus_root=/data/ferplus"])).run_id() == \
        "ferplus-swin_b-sr-ltr-stn-fpdls-s1111-db72ab4f5f"
    assert _legacy(make_config("paper", ["dataset=rafdb", "rafdb_root=/data/rafdb/basic", "model.num_classes=7"])).run_id() \
        == "rafdb-swin_b-sr-ltr-stn-fpdls-s1111-01e8b326d5"


def test_run_id_ignores_the_other_data_sets_roots():
    for profile, others in (("paper", ["rafdb_root=/elsewhere", "synthfer_root=/y"]),
                            ("demo", ["ferplus_root=/elsewhere", "rafdb_root=/y"])):
        base = make_config(profile)
        assert make_config(profile, others).run_id() == base.run_id()
        own = ROOT_KEYS[base.dataset]
        assert make_config(profile, [f"{own}=/moved"]).run_id() != base.run_id()


def test_old_config_json_with_data_root_maps_and_keeps_its_run_id():
    run = ROOT / "results" / "ferplus_cpu" / "first_vanilla_run"
    old = json.loads((run / "config.json").read_text())
    assert "data_root" in old and "ferplus_root" not in old
    cfg = read_config(run / "config.json")
    assert cfg.ferplus_root == old["data_root"] == cfg.data_root
    assert cfg.run_id() == json.loads((run / "metrics.json").read_text())["run_id"]
    assert TrainConfig.from_dict(cfg.to_dict()).run_id() == cfg.run_id()  # new-style file: same id
    raf = dict(old, dataset="rafdb")
    assert TrainConfig.from_dict(raf).rafdb_root == old["data_root"]


def test_read_config_errors_name_the_file(tmp_path):
    with pytest.raises(ConfigError, match="no such file"):
        read_config(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{")
    with pytest.raises(ConfigError, match="bad.json: not valid JSON"):
        read_config(bad)
    bad.write_text(json.dumps({"epochs": 3, "nosuchkey": 1, "model": {"nokey": 1}}))
    with pytest.raises(ConfigError, match="nosuchkey, model.nokey"):
        read_config(bad)


def test_non_result_keys_are_fields():
    names = {f.name for f in fields(TrainConfig)}
    assert set(NON_RESULT_KEYS) <= names and "data_root" not in names
    assert not set(ROOT_KEYS.values()) & set(NON_RESULT_KEYS)


def test_run_id_same_for_relative_and_absolute_paths_inside_the_checkout():
    """01_train in JupyterLab makes relative paths absolute against the project root; `fer-study run`
    from the root keeps them relative: both must name the same run."""
    from fer_study.paths import project_root

    root = project_root()
    rel = make_config("demo", ["synthfer_root=data/synthfer"])
    ab = make_config("demo", [f"synthfer_root={root / 'data' / 'synthfer'}"])
    assert rel.run_id() == ab.run_id() == make_config("demo").run_id()
    assert make_config("demo", ["synthfer_root=/elsewhere/synthfer"]).run_id() != rel.run_id()


def test_a_profiles_recipe_for_one_stand_in_applies_unless_overridden():
    """The demo trains its ConViT stand-in 8 epochs and its ViT stand-in 4 (config.PROFILE_BACKBONE_RECIPES),
    in a table cell and in a single `fer-study train` alike; an explicit epochs override wins; other
    stand-ins keep the profile's 3."""
    from fer_study.config import PROFILE_BACKBONE_RECIPES
    from fer_study.tables import TABLES, cell_config

    assert PROFILE_BACKBONE_RECIPES["demo"] == {"tiny_convit": {"epochs": 8}, "tiny_vit": {"epochs": 4}}
    assert make_config("demo").epochs == 3 and make_config("demo", ["model.backbone=tiny_vit"]).epochs == 4
    assert make_config("demo", ["model.backbone=tiny_convit"]).epochs == 8
    assert make_config("demo", {"model.backbone": "tiny_convit"}).epochs == 8
    assert make_config("demo", ["model.backbone=tiny_convit", "epochs=3"]).epochs == 3
    assert make_config("paper", ["model.backbone=convit_s"]).epochs == 100  # the paper profile has no recipes
    t1 = TABLES["table1"]
    epochs = {c.key: cell_config(c, "demo", 0).epochs for c in t1.cells}
    assert {k for k, e in epochs.items() if e == 8} == {"ConViT|CE + Vanilla", "ConViT|F-PDLS + Proposed"}
    assert {k for k, e in epochs.items() if e == 4} == {"ViT|CE + Vanilla", "ViT|F-PDLS + Proposed"}
    assert set(epochs.values()) == {3, 4, 8}
    assert cell_config(t1.cell("ConViT|CE + Vanilla"), "demo", 0, ["epochs=2"]).epochs == 2  # --set wins
    # the recipe follows the backbone the run ends up with, whoever chose it
    assert cell_config(TABLES["table2"].cell("a"), "demo", 0, ["model.backbone=tiny_convit"]).epochs == 8
    assert cell_config(t1.cell("ConViT|CE + Vanilla"), "demo", 0, ["model.backbone=tiny_swin_s"]).epochs == 3


def test_demo_runs_without_the_authors_test_pass_and_with_the_avx2_cap():
    from fer_study.config import LATER_KEYS, NON_RESULT_KEYS

    demo = make_config("demo")
    assert demo.authors_protocol is False and demo.onednn_max_isa == "avx2"
    assert make_config("paper").authors_protocol is True and make_config("ferplus-cpu").authors_protocol is True
    assert LATER_KEYS["authors_protocol"] is True and "onednn_max_isa" in NON_RESULT_KEYS
