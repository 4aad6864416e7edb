from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from fer_study.errors import ConfigError
from fer_study.models import (
    DIC,
    STN,
    LearnToResize,
    ModelConfig,
    NeuralResizerClassifier,
    SuperResolver,
    build_backbone,
)
from fer_study.models.backbones import PAPER_BACKBONES, TINY_BACKBONES, save_backbone_checkpoint
from fer_study.models.dic import extract_state_dict, load_dic, merge_heatmap_5, normalise
from fer_study.sr_cache import build_sr_cache

# ---- Learn-to-resize (Eq. 1) ----------------------------------------------------------------


def test_ltr_parameter_count_and_shape():
    m = LearnToResize()
    assert sum(p.numel() for p in m.parameters()) == 12083
    assert m(torch.rand(2, 3, 96, 96)).shape == (2, 3, 224, 224)


def test_eq1_identity_when_conv_branch_is_zero():
    m = LearnToResize(out_size=64).eval()
    torch.nn.init.zeros_(m.out.weight)
    torch.nn.init.zeros_(m.out.bias)
    x = torch.rand(2, 3, 192, 192)
    ref = F.interpolate(x, size=(64, 64), mode="bilinear", align_corners=False)
    torch.testing.assert_close(m(x), ref)


# ---- DIC -----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def dic() -> DIC:
    torch.manual_seed(0)
    return DIC().eval()


def test_dic_keys_and_parameter_count(dic):
    sd = dic.state_dict()
    assert len(sd) == 296
    assert sum(p.numel() for p in dic.parameters()) == 21_803_849
    assert sum(p.numel() for n, p in dic.named_parameters() if n.startswith("HG.")) == 11_999_172
    assert {k.split(".")[0] for k in sd} == {"conv_in", "first_block", "block", "out", "conv_out", "HG"}
    for k in ("conv_in.0.weight", "conv_in.1.weight", "first_block.upBlocks.5.0.weight",
              "block.fusion_block.resnet.6.res.2.weight", "HG.hg.res4_1.conv_block.3.weight",
              "HG.pre_conv_block.2.skip_layer.weight", "HG.hg_conv_out.2.weight"):
        assert k in sd, k
    assert sd["first_block.upBlocks.0.0.weight"].shape == (48, 48, 12, 12)
    assert sd["block.compress_in.0.weight"].shape == (48, 96, 1, 1)


def test_dic_paper_config_scales_x8_all_steps(dic):
    with torch.no_grad():
        srs, heats = dic(normalise(torch.rand(1, 1, 8, 8)), return_all=True)
    assert len(srs) == 4 and len(heats) == 4
    assert srs[-1].shape == (1, 3, 64, 64) and heats[0].shape == (1, 68, 16, 16)


def test_dic_48_to_384():
    m = DIC(num_features=8, num_groups=2, num_steps=2, hg_num_feature=32, num_fusion_block=1).eval()
    with torch.no_grad():
        assert m(normalise(torch.rand(1, 1, 48, 48))).shape == (1, 3, 384, 384)


def test_merge_heatmap_groups():
    h = torch.zeros(1, 68, 4, 4)
    h[:, 40] = 1.0  # a left-eye landmark
    m = merge_heatmap_5(h)
    assert m.shape == (1, 5, 4, 4) and m[0, 0].max() == 1.0 and m[0, 1:].abs().sum() == 0


def test_dic_checkpoint_forms_and_strict_errors(dic, tmp_path):
    sd = dic.state_dict()
    forms = {"bare.pth": sd, "wrapped.pth": {"state_dict": sd, "epoch": 3},
             "netg.pth": {"netG": {"module." + k: v for k, v in sd.items()}}}
    for name, obj in forms.items():
        torch.save(obj, tmp_path / name)
        m = load_dic(tmp_path / name)
        assert torch.equal(m.state_dict()["conv_out.0.weight"], sd["conv_out.0.weight"])
    broken = {k: v for k, v in sd.items() if not k.startswith("HG.")}
    broken["extra.weight"] = torch.zeros(1)
    torch.save(broken, tmp_path / "broken.pth")
    with pytest.raises(ConfigError, match=r"DIC checkpoint with \d+ of 296 expected keys .*missing: HG\..*"
                                          r"unexpected: extra.weight"):
        load_dic(tmp_path / "broken.pth")
    with pytest.raises(FileNotFoundError, match="Deep-Iterative-Collaboration"):
        load_dic(tmp_path / "nope.pth")
    assert set(extract_state_dict({"state_dict": {"module.a": 1}})) == {"a"}


# ---- SuperResolver backends and cache -----------------------------------------------------

def test_deterministic_backends_gray_in_gray_out():
    x = torch.randint(0, 256, (2, 1, 48, 48), dtype=torch.uint8)
    for b in ("bicubic", "bilinear"):
        y = SuperResolver(b, out_size=96)(x)
        assert y.shape == (2, 1, 96, 96) and 0 <= y.min() and y.max() <= 1


def test_dic_backend_needs_weights_and_loads_them(dic, tmp_path):
    with pytest.raises(FileNotFoundError, match="backend 'dic'"):
        SuperResolver("dic", weights=tmp_path / "missing.pth")
    torch.save({"state_dict": dic.state_dict()}, tmp_path / "dic.pth")
    sr = SuperResolver("dic", weights=tmp_path / "dic.pth", out_size=32)
    with torch.no_grad():
        y = sr(torch.rand(1, 1, 8, 8))
    assert y.shape == (1, 3, 32, 32)  # 64 px RGB output (kept RGB) resized to the requested 32
    assert not any(p.requires_grad for p in sr.parameters())


def test_spandrel_backend_with_local_checkpoint(tmp_path):
    pytest.importorskip("spandrel")
    from spandrel.architectures.ESRGAN import ESRGAN

    torch.save(ESRGAN(in_nc=3, out_nc=3, num_filters=8, num_blocks=1, scale=4).state_dict(), tmp_path / "esr.pth")
    sr = SuperResolver("spandrel", weights=tmp_path / "esr.pth", out_size=48)
    y = sr(torch.rand(2, 1, 16, 16))
    assert y.shape == (2, 3, 48, 48)  # x4 = 64 px RGB, scale mismatch resized to 48


def test_sr_cache_round_trip_resume_and_invalidation(tmp_path, synth_root):
    from fer_study.sr_train import train_facesr

    imgs = np.random.default_rng(0).integers(0, 256, (10, 48, 48), dtype=np.uint8)
    sr = SuperResolver("bicubic", out_size=96)
    part, meta = build_sr_cache(imgs, sr, tmp_path, batch_size=4, stop_after=4, progress=False)
    assert meta["done"] == 4
    full, meta = build_sr_cache(imgs, sr, tmp_path, batch_size=4, progress=False)
    assert meta["done"] == 10 and full.shape == (10, 1, 96, 96) and full.dtype == np.uint8
    ref = (sr(torch.from_numpy(imgs)[:, None]) * 255).round().to(torch.uint8).numpy()
    np.testing.assert_array_equal(full, ref)
    # other settings or other weights -> another entry
    _, m2 = build_sr_cache(imgs, SuperResolver("bilinear", out_size=96), tmp_path, progress=False)
    assert m2["key"] != meta["key"]
    lr, hr = np.zeros((4, 48, 48), np.uint8), np.zeros((4, 96, 96), np.uint8)
    train_facesr(lr, hr, tmp_path / "a.pt", steps=1, batch_size=2, progress=False, seed=0)
    train_facesr(lr, hr, tmp_path / "b.pt", steps=2, batch_size=2, progress=False, seed=1)
    ka = build_sr_cache(imgs, SuperResolver("facesr", tmp_path / "a.pt", 96), tmp_path, progress=False)[1]["key"]
    kb = build_sr_cache(imgs, SuperResolver("facesr", tmp_path / "b.pt", 96), tmp_path, progress=False)[1]["key"]
    assert ka != kb
    # bf16 is another entry, close to fp32; fp32 keys carry no precision field (old entries stay valid)
    a32, ma = build_sr_cache(imgs, SuperResolver("facesr", tmp_path / "a.pt", 96), tmp_path, progress=False)
    a16, m16 = build_sr_cache(imgs, SuperResolver("facesr", tmp_path / "a.pt", 96, precision="bf16"), tmp_path,
                              progress=False)
    assert m16["key"] != ma["key"] and m16["precision"] == "bf16" and "precision" not in ma
    assert np.abs(a16.astype(int) - a32.astype(int)).mean() < 2.0
    with pytest.raises(ValueError, match="precision"):
        SuperResolver("bicubic", precision="fp16")


# ---- STN, backbones, the composed model -----------------------------------------------------

def test_stn_identity_init_and_counts():
    assert sum(p.numel() for p in STN(3, 48).parameters()) == 23904
    x = torch.rand(2, 3, 48, 48)
    torch.testing.assert_close(STN(3, 48)(x), x, atol=1e-5, rtol=0)


@pytest.mark.parametrize("name", list(TINY_BACKBONES))
@pytest.mark.parametrize("size,stem", [(64, "patch"), (48, "conv"), (48, "conv_wide")])  # 48 + conv: demo; conv_wide: ferplus-cpu
def test_tiny_backbones_forward(name, size, stem):
    bb = build_backbone(name, img_size=size, stem=stem)
    assert bb.model(torch.rand(2, 3, size, size)).shape == (2, bb.num_features)


@pytest.mark.parametrize("name", ["vit_s", "deit_s", "convit_s", "xcit_s", "swin_s"])
def test_paper_backbones_at_224(name):
    bb = build_backbone(name)
    with torch.no_grad():
        assert bb.model(torch.rand(1, 3, 224, 224)).shape == (1, bb.num_features)
    assert bb.img_size == 224
    if name == "vit_s":
        assert bb.mean == (0.5, 0.5, 0.5)  # augreg config, not ImageNet's
    assert PAPER_BACKBONES[name][0].split("_")[0] in bb.timm_name


def test_backbone_local_checkpoint_and_offline_error(tmp_path, monkeypatch):
    src = build_backbone("tiny_vit")
    save_backbone_checkpoint(src.model, tmp_path / "w.pth")
    bb = build_backbone("tiny_vit", checkpoint=tmp_path / "w.pth")
    for (k, a), b in zip(src.model.state_dict().items(), bb.model.state_dict().values()):
        assert torch.equal(a, b), k
    with pytest.raises(FileNotFoundError):
        build_backbone("tiny_vit", checkpoint=tmp_path / "none.pth")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "hf"))  # an empty cache
    with pytest.raises(ConfigError, match="not in the local Hugging Face cache .* HF_HUB_OFFLINE=1 forbids"):
        build_backbone("deit_tiny_patch16_224", pretrained=True)


SETTINGS = {"a": ("bilinear", "none", False), "b": ("bilinear", "ltr", False), "c": ("sr", "bilinear", False),
            "d": ("sr", "ltr", False), "e": ("sr", "ltr", True)}


@pytest.mark.parametrize("setting", list(SETTINGS))
def test_table2_settings_build_and_run(setting):
    up, down, stn = SETTINGS[setting]
    m = NeuralResizerClassifier(ModelConfig(backbone="tiny_swin_s", up=up, down=down, stn=stn, sr_size=192))
    size = 192 if m.cfg.input_kind == "sr" else 48
    assert m(torch.rand(2, 1, size, size)).shape == (2, 8)
    assert m.resize(torch.rand(2, 1, size, size)).shape == (2, 3, 64, 64)
    s = m.parameter_summary()
    assert (s["resizer"]["trainable"] == 12083) == (down == "ltr") and (s["stn"]["total"] > 0) == stn


def test_sr_gets_no_gradient_stn_before_sr_does():
    sr = SuperResolver("bicubic", out_size=96)
    net = torch.nn.Conv2d(1, 1, 3, padding=1)  # a stand-in trainable-looking SR network
    sr.net, sr.channels, sr.backend = net, 1, "facesr"
    for p in net.parameters():
        p.requires_grad_(False)
    cfg = ModelConfig(backbone="tiny_vit", up="sr", down="ltr", stn=True, stn_placement="before_sr", sr_size=96)
    m = NeuralResizerClassifier(cfg, sr=sr)
    m(torch.rand(2, 1, 48, 48)).sum().backward()
    assert all(p.grad is None for p in net.parameters())
    assert m.stn.fc[2].bias.grad is not None and m.resizer.out.weight.grad is not None


def test_config_errors():
    with pytest.raises(ValueError, match="up=sr needs a downsizer"):
        NeuralResizerClassifier(ModelConfig(backbone="tiny_vit", up="sr", down="none"))
    m = NeuralResizerClassifier(ModelConfig(backbone="tiny_vit", up="sr", down="ltr", sr_size=96))
    with pytest.raises(ValueError, match="expects cached 96px"):
        m(torch.rand(1, 1, 48, 48))


def test_facesr_beats_bicubic_on_held_out_synthfer(tmp_path):
    from fer_study.data.synth import SynthConfig, generate
    from fer_study.sr_train import evaluate_sr, split_pairs, synthfer_pairs, train_facesr

    generate(tmp_path / "s", SynthConfig(n=800, seed=5, hr_size=192))  # as the demo: 192 px renders -> x2 pairs
    lr, hr = synthfer_pairs(tmp_path / "s", 96)
    tr, ho = split_pairs(len(lr), 0.2, seed=0)
    train_facesr(lr[tr], hr[tr], tmp_path / "facesr.pt", steps=200, batch_size=16, nf=32, blocks=4,
                 progress=False, seed=0)
    r = evaluate_sr(lr[ho], hr[ho], {"bicubic": SuperResolver("bicubic", out_size=96),
                                     "facesr": SuperResolver("facesr", tmp_path / "facesr.pt", out_size=96)})
    assert r["facesr"]["psnr"] > r["bicubic"]["psnr"] + 0.1, r  # seeded: +0.17 dB here; the demo run: +1.3 dB
    assert r["facesr"]["ssim"] > r["bicubic"]["ssim"], r


def test_checkpoint_folder_serves_each_backbone_by_timm_name(tmp_path):
    from fer_study.models.backbones import build_backbone, checkpoint_file, save_backbone_checkpoint

    a = build_backbone("vit_tiny_patch16_224", img_size=32, depth=1)
    save_backbone_checkpoint(a.model, tmp_path / "vit_tiny_patch16_224.pth")
    assert checkpoint_file(tmp_path, "vit_tiny_patch16_224.augreg_in21k_ft_in1k") == tmp_path / "vit_tiny_patch16_224.pth"
    b = build_backbone("vit_tiny_patch16_224", checkpoint=tmp_path, img_size=32, depth=1)
    for k, v in a.model.state_dict().items():
        assert torch.equal(v, b.model.state_dict()[k]), k
    with pytest.raises(FileNotFoundError, match="has no weights for swin_tiny"):
        checkpoint_file(tmp_path, "swin_tiny_patch4_window7_224.ms_in1k")
