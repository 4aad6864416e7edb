"""The STN's own learning rate (``stn_lr_scale``, :func:`fer_study.training.optim.param_groups`)."""

from __future__ import annotations

import pytest
import torch

from fer_study.config import TrainConfig, make_config
from fer_study.errors import ConfigError
from fer_study.models import ModelConfig, NeuralResizerClassifier
from fer_study.training.optim import make_optimizer, make_scheduler, param_groups, stn_parameter

MODEL = dict(backbone="tiny_swin_s", up="sr", down="ltr", stn=True, sr_size=96, img_size=48, ltr_n=8, stem="conv")


def _cfg(scale: float) -> TrainConfig:
    return make_config("demo", {"stn_lr_scale": scale, "model.stn": True})


def test_one_group_at_scale_one_and_the_stn_alone_in_the_second_otherwise():
    model = NeuralResizerClassifier(ModelConfig(**MODEL))
    trainable = {id(p) for p in model.parameters() if p.requires_grad}
    (one,) = param_groups(_cfg(1.0), model)
    assert {id(p) for p in one["params"]} == trainable and "lr" not in one
    rest, stn = param_groups(_cfg(0.1), model)
    assert {id(p) for p in stn["params"]} == {id(p) for p in model.stn.parameters()}
    assert {id(p) for p in rest["params"]} | {id(p) for p in stn["params"]} == trainable
    assert not {id(p) for p in rest["params"]} & {id(p) for p in stn["params"]}
    assert stn["lr"] == pytest.approx(1e-4)


def test_a_model_without_an_stn_keeps_one_group():
    model = NeuralResizerClassifier(ModelConfig(**{**MODEL, "stn": False}))
    assert len(param_groups(_cfg(0.1), model)) == 1


def test_the_schedule_keeps_the_stn_at_a_tenth_of_the_lr():
    torch.manual_seed(0)
    model = NeuralResizerClassifier(ModelConfig(**MODEL))
    cfg = _cfg(0.1)
    opt = make_optimizer(cfg, model, torch.device("cpu"))
    sched = make_scheduler(cfg, opt, steps_per_epoch=10)
    x, y = torch.rand(4, 3, 96, 96), torch.tensor([0, 1, 2, 3])
    for _ in range(5):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
        sched.step()
        assert opt.param_groups[1]["lr"] == pytest.approx(0.1 * opt.param_groups[0]["lr"])
    assert opt.param_groups[0]["lr"] > 0


@pytest.mark.parametrize("name,stn", [("stn.fc.2.weight", True), ("module.stn.loc.0.bias", True),
                                      ("module._orig_mod.stn.fc.0.weight", True), ("backbone.stn.weight", False),
                                      ("resizer.out.weight", False), ("stn_extra.w", False)])
def test_stn_parameter_names_through_wrappers(name, stn):
    assert stn_parameter(name) is stn


def test_profiles_and_ids():
    assert make_config("demo").stn_lr_scale == 0.1
    assert make_config("paper").stn_lr_scale == 1.0  # the authors' single Adam group
    d = make_config("paper").to_dict()
    d.pop("stn_lr_scale")  # a config.json from before the key: one group, same id
    assert TrainConfig.from_dict(d).run_id() == make_config("paper").run_id()
    assert make_config("paper", ["stn_lr_scale=0.5"]).run_id() != make_config("paper").run_id()
    # without an STN the scale changes nothing, and the id is the one from before the key existed
    no_stn = make_config("demo")
    assert not no_stn.model.stn and no_stn.stn_lr_scale == 0.1
    assert no_stn.run_id() == make_config("demo", ["stn_lr_scale=1"]).run_id()
    d = no_stn.to_dict()
    d.pop("stn_lr_scale")
    assert TrainConfig.from_dict(d).run_id() == no_stn.run_id()
    with_stn = make_config("demo", ["model.stn=true"])
    assert with_stn.run_id() != make_config("demo", ["model.stn=true", "stn_lr_scale=1"]).run_id()
    for bad in ("0", "1.5", "-1"):
        with pytest.raises(ConfigError, match="stn_lr_scale"):
            make_config("demo", [f"stn_lr_scale={bad}"])


def test_the_table_note_names_the_stn_lr_only_where_the_table_has_an_stn():
    from fer_study.report import _recipe_note
    from fer_study.tables import TABLES

    assert "(STN 0.0001)" in _recipe_note("demo", [], None, TABLES["table3"])
    assert "STN" not in _recipe_note("demo", [], None, TABLES["table1"])
