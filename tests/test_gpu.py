"""CUDA-only checks (skipped without a GPU); run by scripts/gpu_check.sh on a GPU machine."""

from __future__ import annotations

import pytest
import torch

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


def test_bf16_nr_training_step_and_sr_frozen():
    from fer_study.models import ModelConfig, NeuralResizerClassifier

    m = NeuralResizerClassifier(ModelConfig(backbone="swin_s", up="sr", down="ltr", stn=True)).cuda().cnn_channels_last_()
    x = torch.rand(8, 1, 384, 384, device="cuda")
    with torch.autocast("cuda", dtype=torch.bfloat16):
        out = m(x)
    loss = out.float().logsumexp(-1).mean()
    loss.backward()
    assert torch.isfinite(loss) and m.resizer.out.weight.grad is not None


def test_dic_bf16_close_to_fp32():
    from fer_study.models.dic import DIC, normalise

    torch.manual_seed(0)
    net = DIC().cuda().eval()
    x = normalise(torch.rand(2, 1, 48, 48, device="cuda"))
    with torch.no_grad():
        a = net(x)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            b = net(x).float()
    assert a.shape == (2, 3, 384, 384)
    assert (a - b).abs().mean() < 0.05


def test_engine_short_cuda_run(synth_root, tmp_path):
    from fer_study.config import make_config
    from fer_study.runs import Run
    from fer_study.training import train

    cfg = make_config("demo", {"synthfer_root": str(synth_root), "runs_dir": str(tmp_path / "runs"),
                               "cache_dir": str(tmp_path / "cache"), "model.up": "bilinear", "model.sr_size": "96",
                               "epochs": "1", "progress": "false", "device": "cuda", "amp": "true"})
    m = Run(train(cfg)).metrics()
    assert "clean" in m["protocols"] and m["n"]["train"] > 0


def test_augment_on_cuda_matches_cpu_draws():
    from fer_study.data.tensors import AugmentConfig, augment

    x = torch.rand(4, 1, 64, 64)
    a = augment(x, AugmentConfig(), torch.Generator().manual_seed(1))
    b = augment(x.cuda(), AugmentConfig(), torch.Generator().manual_seed(1)).cpu()
    d = (a - b).abs()
    # same draws; only float rounding differs, and with nearest sampling a rounding flip moves a whole pixel
    assert d.mean() < 1e-3 and (d > 1e-2).float().mean() < 0.01


def test_dic_sr_cache_bf16_close_to_fp32(tmp_path):
    import numpy as np

    from fer_study.models.dic import DIC
    from fer_study.models.sr import SuperResolver
    from fer_study.sr_cache import build_sr_cache

    torch.manual_seed(0)
    torch.save(DIC().state_dict(), tmp_path / "dic.pth")
    imgs = np.random.default_rng(0).integers(0, 256, (4, 48, 48), dtype=np.uint8)
    caches = {p: build_sr_cache(imgs, SuperResolver("dic", tmp_path / "dic.pth", 384, "cuda", precision=p),
                                tmp_path / p, 2, "cuda", progress=False) for p in ("fp32", "bf16")}
    (a, ma), (b, mb) = caches["fp32"], caches["bf16"]
    assert a.shape == b.shape == (4, 3, 384, 384) and ma["key"] != mb["key"]  # DIC's output keeps its colour
    assert np.abs(a.astype(int) - b.astype(int)).mean() < 3.0
