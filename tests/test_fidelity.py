"""Issue "Fidelity": the model and the augmentation follow the authors' pipeline
(hbin0701/VT_with_NR_for_FER; field notes section 2), each point pinned here.

1. normalisation before the STN and the resizer (their loader normalises), nothing after the resizer
2. the authors' torchvision augmentation chain, equal to torchvision's own tensor functions
3. RGB SR output kept (DIC), and cached with 3 channels under a new key
4. STN with align_corners=True
5. backbone weights pinned to the 2021 timm defaults by tag
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from fer_study.data.tensors import AUGMENTS, JITTER_OPS, AugmentConfig, augment, draw_params
from fer_study.models import STN, ModelConfig, NeuralResizerClassifier, SuperResolver, build_backbone
from fer_study.models.backbones import PAPER_BACKBONES, paper_backbone_tags, save_backbone_checkpoint

# ---- 1. normalisation order -------------------------------------------------------------------


def _bilinear(x: torch.Tensor, size: int) -> torch.Tensor:
    return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)


def _model(normalise: str = "input", residual_bias: tuple[float, float, float] | None = None, **kw):
    """A tiny NR model whose STN is the identity and whose resizer's residual branch is zero (Eq. 1:
    only the bilinear skip is left) or, with ``residual_bias``, a constant per channel."""
    cfg = dict(backbone="tiny_swin_s", up="sr", down="ltr", stn=True, sr_size=96, normalise=normalise)
    m = NeuralResizerClassifier(ModelConfig(**{**cfg, **kw})).eval()
    torch.nn.init.zeros_(m.resizer.out.weight)
    with torch.no_grad():
        m.resizer.out.bias.copy_(torch.tensor(residual_bias or (0.0, 0.0, 0.0)))
    return m


def _backbone_input(m: NeuralResizerClassifier, x: torch.Tensor) -> torch.Tensor:
    seen = []
    h = m.backbone.register_forward_pre_hook(lambda _, a: seen.append(a[0].detach().clone()))
    try:
        with torch.no_grad():
            m(x)
    finally:
        h.remove()
    return seen[0]


@pytest.mark.parametrize("channels", [1, 3])
def test_backbone_input_is_the_authors_normalised_bilinear_image(channels):
    m = _model()
    assert m.std.max() < 0.3  # ImageNet statistics: the earlier order amplified the residual ~4.4x
    x = torch.rand(2, channels, 96, 96)  # the cached SR image
    xin = x.expand(-1, 3, -1, -1)
    ref = (_bilinear(xin, m.img_size) - m.mean) / m.std  # what the authors' Swin receives
    got = _backbone_input(m, x)
    torch.testing.assert_close(got, ref, atol=2e-4, rtol=0)  # identity STN: ~1e-5 grid rounding
    torch.testing.assert_close(m.resize(x), got)  # resize() is the backbone's input
    torch.testing.assert_close(m.denormalise(got), _bilinear(xin, m.img_size), atol=5e-5, rtol=0)


def test_bilinear_setting_normalises_the_48px_input():
    m = _model(up="bilinear", stn=False)
    x = torch.rand(2, 1, 48, 48).expand(-1, 3, -1, -1)
    ref = (_bilinear(_bilinear(x, 96), m.img_size) - m.mean) / m.std  # commutes up to rounding
    torch.testing.assert_close(_backbone_input(m, x), ref, atol=1e-5, rtol=0)


def test_resizer_residual_reaches_the_backbone_undivided():
    bias = (0.05, -0.1, 0.2)
    x = torch.rand(2, 3, 96, 96)
    contrib = {}
    for order in ("input", "backbone"):
        m = _model(order, residual_bias=bias)
        base = (_bilinear(x, m.img_size) - m.mean) / m.std
        contrib[order] = (_backbone_input(m, x) - base).mean(dim=(0, 2, 3))
    torch.testing.assert_close(contrib["input"], torch.tensor(bias), atol=2e-4, rtol=0)
    # the earlier order (normalise before the backbone) divides the residual by std: ratio ~1/std
    torch.testing.assert_close(contrib["input"] / contrib["backbone"], m.std.flatten(), atol=0, rtol=2e-3)


def test_backbone_order_option_restores_the_earlier_pipeline():
    m = _model("backbone", residual_bias=(0.1, 0.1, 0.1))
    x = torch.rand(2, 3, 96, 96)
    with torch.no_grad():
        old = (m.resizer(m.stn(x)) - m.mean) / m.std  # STN and resizer on [0, 1], then normalise
    torch.testing.assert_close(_backbone_input(m, x), old)
    with pytest.raises(ValueError, match="normalise"):
        ModelConfig(backbone="tiny_swin_s", normalise="later").validate()


def test_online_sr_consumes_unit_range_and_normalisation_follows_it():
    sr = SuperResolver("bicubic", out_size=96)
    seen = []
    sr.register_forward_pre_hook(lambda _, a: seen.append(a[0].detach().clone()))
    m = _model(stn_placement="before_sr")
    m.sr = sr
    x = torch.rand(2, 1, 48, 48)
    got = _backbone_input(m, x)
    assert seen and seen[0].min() >= 0 and seen[0].max() <= 1  # SR sees [0, 1] images (STN output)
    ref = (_bilinear(sr(x.expand(-1, 3, -1, -1)), m.img_size) - m.mean) / m.std
    torch.testing.assert_close(got, ref, atol=2e-4, rtol=0)


# ---- 2. augmentation: the authors' torchvision chain ----------------------------------------------


def test_default_augment_is_the_authors_chain():
    a = AugmentConfig()
    assert (a.hflip, a.rotation, a.affine_rotation, a.scale, a.translate) == (0.5, 45.0, 15.0, (1.2, 1.2), 0.0)
    assert (a.brightness, a.contrast, a.saturation) == (0.4, 0.4, 0.4)
    assert (a.interpolation, a.geometry) == ("nearest", "sequential")
    assert AUGMENTS["authors"] == a
    assert AUGMENTS["none"].jitter_ops == () and AUGMENTS["light"].rotation < a.rotation
    with pytest.raises(ValueError, match="interpolation"):
        AugmentConfig(interpolation="bicubic")


def test_drawn_parameter_ranges_on_a_fixed_seed():
    p = draw_params(3000, AugmentConfig(), torch.Generator().manual_seed(0), (48, 48))
    assert p.angle.abs().max() <= 45 and p.angle.min() < -44 and p.angle.max() > 44
    assert p.affine_angle.abs().max() <= 15 and p.affine_angle.abs().max() > 14.9
    assert torch.all(p.scale == 1.2) and torch.all(p.translate == 0)
    assert p.factors.min() >= 0.6 and p.factors.max() <= 1.4 and p.factors.shape == (3000, 3)
    assert (p.factors[:, JITTER_OPS.index("saturation")] - 1).abs().max() > 0.39  # saturation present
    assert {tuple(o) for o in p.order.tolist()} == set(itertools.permutations(range(3)))  # every order
    assert 0.45 < p.flip.float().mean() < 0.55
    q = draw_params(3000, AugmentConfig(), torch.Generator().manual_seed(0), (48, 48))
    assert torch.equal(p.angle, q.angle) and torch.equal(p.order, q.order)


def _torchvision(img: torch.Tensor, q: dict, interpolation: str, cfg: AugmentConfig) -> torch.Tensor:
    """torchvision's tensor functions with the forced draws ``q``, as the authors' transforms call them
    (RandomRotation / RandomAffine pass fill=[0.0] * C on tensors)."""
    import torchvision.transforms.functional as TF
    from torchvision.transforms import InterpolationMode

    mode = InterpolationMode.NEAREST if interpolation == "nearest" else InterpolationMode.BILINEAR
    fill = [0.0] * img.shape[0]
    if q["flip"]:
        img = TF.hflip(img)
    img = TF.rotate(img, q["angle"], mode, fill=fill)
    img = TF.affine(img, q["affine_angle"], q["translate"], q["scale"], [0.0, 0.0], mode, fill=fill)
    for op in q["order"]:
        img = getattr(TF, f"adjust_{op}")(img, q[op])
    return img


@pytest.mark.parametrize("channels,size", [(1, 48), (3, 40)])
@pytest.mark.parametrize("interpolation", ["nearest", "bilinear"])
def test_augment_equals_torchvision_with_forced_draws(channels, size, interpolation):
    pytest.importorskip("torchvision")
    x = torch.rand(6, channels, size, size)
    for jitter in (0.0, 0.4):  # geometry alone, then the full chain
        cfg = AugmentConfig(interpolation=interpolation, translate=0.1, brightness=jitter, contrast=jitter,
                            saturation=jitter)
        y, p = augment(x, cfg, torch.Generator().manual_seed(channels + size), return_params=True)
        assert p.flip.any() and not p.flip.all()
        for i in range(len(x)):
            ref = _torchvision(x[i], p.image(i), interpolation, cfg)
            if jitter == 0:  # the same float32 grid and sampling: bit for bit
                assert torch.equal(y[i], ref), i
            else:  # the contrast mean is a float32 reduction over another shape: ~1e-7 apart
                torch.testing.assert_close(y[i], ref, atol=1e-6, rtol=0)


def test_saturation_is_a_no_op_on_one_channel():
    x = torch.rand(8, 1, 16, 16)
    cfg = AugmentConfig.none()
    cfg.saturation = 0.4
    y, p = augment(x, cfg, torch.Generator().manual_seed(0), return_params=True)
    assert torch.equal(y, x) and (p.factors[:, 2] != 1).all()
    y3 = augment(x.expand(-1, 3, -1, -1).clone() * torch.tensor([1.0, 0.5, 0.2]).view(1, 3, 1, 1), cfg,
                 torch.Generator().manual_seed(0))
    assert not torch.equal(y3[:, 0], y3[:, 1] * 2)  # on RGB it blends with the grayscale image


def test_augment_variants_and_call_signature():
    x = torch.rand(4, 1, 32, 32)
    assert torch.equal(augment(x, AUGMENTS["none"], torch.Generator()), x)
    for name in ("authors", "light"):
        a = augment(x, AUGMENTS[name], torch.Generator().manual_seed(1))
        b = augment(x, AUGMENTS[name], torch.Generator().manual_seed(1))
        assert torch.equal(a, b) and not torch.equal(a, x) and a.min() >= 0 and a.max() <= 1
    light = AUGMENTS["light"]
    assert (light.interpolation, light.geometry) == ("bilinear", "fused")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_augment_on_cuda_is_sync_free_and_matches_cpu():
    x = torch.rand(4, 3, 64, 64)
    a = augment(x, AugmentConfig(), torch.Generator().manual_seed(1))
    xc = x.cuda()
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        b = augment(xc, AugmentConfig(), torch.Generator().manual_seed(1))
    finally:
        torch.cuda.set_sync_debug_mode("default")
    d = (a - b.cpu()).abs()
    assert d.mean() < 1e-3  # same draws; nearest may pick another pixel where float rounding differs


# ---- 3. SR output keeps its colour ----------------------------------------------------------------


def test_dic_output_stays_rgb_and_is_cached_with_three_channels(tmp_path):
    from fer_study.models.dic import DIC
    from fer_study.sr_cache import build_sr_cache

    torch.manual_seed(0)
    torch.save({"state_dict": DIC().state_dict()}, tmp_path / "dic.pth")  # random weights
    sr = SuperResolver("dic", weights=tmp_path / "dic.pth", out_size=64)
    imgs = np.random.default_rng(0).integers(0, 256, (2, 8, 8), dtype=np.uint8)  # 8 -> 64 px (x8)
    with torch.no_grad():
        y = sr(torch.from_numpy(imgs)[:, None])
    assert y.shape == (2, 3, 64, 64) and sr.output_channels(1) == 3
    assert (y[:, 0] - y[:, 1]).abs().mean() > 1e-3 and (y[:, 1] - y[:, 2]).abs().mean() > 1e-3
    arr, meta = build_sr_cache(imgs, sr, tmp_path / "cache", progress=False)
    assert arr.shape == (2, 3, 64, 64) and meta["channels"] == 3 and meta["rgb_output"] is True
    np.testing.assert_array_equal(arr, (y * 255).round().to(torch.uint8).numpy())
    # grayscale backends stay 1-channel and keep their key fields
    g = SuperResolver("bicubic", out_size=64)
    assert g.output_channels(1) == 1 and "rgb_output" not in g.identity()
    assert build_sr_cache(imgs, g, tmp_path / "cache", progress=False)[0].shape == (2, 1, 64, 64)


def test_rgb_cache_feeds_the_model():
    m = NeuralResizerClassifier(ModelConfig(backbone="tiny_swin_s", up="sr", down="ltr", sr_size=96)).eval()
    with torch.no_grad():
        assert m(torch.rand(2, 3, 96, 96)).shape == (2, 8)


# ---- 4. STN: align_corners=True ---------------------------------------------------------------------


@pytest.mark.parametrize("align_corners", [True, False])
def test_stn_identity_init(align_corners):
    x = torch.rand(2, 3, 48, 48)
    stn = STN(3, 48, align_corners=align_corners)
    assert stn.align_corners is align_corners and STN(3, 48).align_corners is True
    with torch.no_grad():
        assert torch.equal(stn.theta(x), torch.tensor([[1.0, 0, 0], [0, 1, 0]]).expand(2, 2, 3))
        # not bit-exact: affine_grid's float32 grid lands ~1e-6 px off the pixel centres (max |diff| ~3e-6)
        torch.testing.assert_close(stn(x), x, atol=1e-5, rtol=0)


def test_stn_non_identity_theta_by_hand():
    w = 32
    x = torch.rand(2, 3, w, w)
    stn = STN(3, w)
    with torch.no_grad():
        stn.fc[2].bias.copy_(torch.tensor([1.0, 0, 2 / (w - 1), 0, 1, 0]))  # one pixel right (corner-aligned)
        y = stn(x)
        torch.testing.assert_close(y[..., :-1], x[..., 1:], atol=1e-5, rtol=0)
        assert y[..., -1].abs().max() < 1e-4  # sampled past the edge: zero padding
        theta = torch.tensor([0.9, -0.2, 0.05, 0.15, 1.1, -0.1])
        stn.fc[2].bias.copy_(theta)
        ref = F.grid_sample(x, F.affine_grid(theta.view(1, 2, 3).expand(2, 2, 3), [2, 3, w, w], align_corners=True),
                            align_corners=True)
        torch.testing.assert_close(stn(x), ref)
    m = NeuralResizerClassifier(ModelConfig(backbone="tiny_swin_s", up="sr", stn=True, sr_size=96,
                                            stn_align_corners=False))
    assert m.stn.align_corners is False


# ---- 5. backbone weights pinned by tag --------------------------------------------------------------

#: the 2021 default weights (timm v0.4.12 default_cfgs; XCiT: master of 2021-07 / v0.5.4) by timm 1.0 tag
PAPER_TAGS = {
    "vit_s": "vit_small_patch16_224.augreg_in21k_ft_in1k",
    "deit_s": "deit_small_patch16_224.fb_in1k",
    "convit_s": "convit_small.fb_in1k",
    "xcit_s": "xcit_small_12_p16_224.fb_in1k",
    "swin_t": "swin_tiny_patch4_window7_224.ms_in1k",
    "swin_s": "swin_small_patch4_window7_224.ms_in1k",
    "swin_b": "swin_base_patch4_window7_224.ms_in22k_ft_in1k",
    "swin_l": "swin_large_patch4_window7_224.ms_in22k_ft_in1k",
}


def test_paper_aliases_resolve_to_existing_pretrained_tags():
    import timm

    assert paper_backbone_tags() == PAPER_TAGS and set(PAPER_BACKBONES) == set(PAPER_TAGS)
    for alias, tag in PAPER_TAGS.items():
        assert tag in timm.list_pretrained(tag.split(".")[0] + "*"), (alias, tag)
    assert timm.models.get_pretrained_cfg("swin_small_patch4_window7_224").tag == "ms_in22k_ft_in1k"  # why pin


@pytest.mark.parametrize("alias,mean", [("swin_t", 0.485), ("vit_s", 0.5)])
def test_tagged_backbones_build_with_the_tags_normalisation(alias, mean, tmp_path):
    bb = build_backbone(alias, pretrained=False)
    assert bb.timm_name == PAPER_TAGS[alias] and bb.model.pretrained_cfg["tag"] == PAPER_TAGS[alias].split(".")[1]
    assert bb.mean[0] == mean and bb.img_size == 224
    if alias == "swin_t":  # a local checkpoint still loads under the tagged name
        save_backbone_checkpoint(bb.model, tmp_path / "w.pth")
        b2 = build_backbone(alias, checkpoint=tmp_path / "w.pth")
        for (k, a), b in zip(bb.model.state_dict().items(), b2.model.state_dict().values()):
            assert torch.equal(a, b), k


def test_fused_geometry_is_one_affine_with_the_combined_angle():
    pytest.importorskip("torchvision")
    import torchvision.transforms.functional as TF
    from torchvision.transforms import InterpolationMode

    x = torch.rand(4, 3, 32, 32)
    cfg = AugmentConfig(hflip=0.0, scale=(1.0, 1.2), brightness=0, contrast=0, saturation=0,
                        interpolation="bilinear", geometry="fused")
    y, p = augment(x, cfg, torch.Generator().manual_seed(3), return_params=True)
    for i in range(len(x)):  # rotate(a) then affine(b, s) == affine(b - a, s): one resampling
        q = p.image(i)
        ref = TF.affine(x[i], q["affine_angle"] - q["angle"], [0, 0], q["scale"], [0.0, 0.0],
                        InterpolationMode.BILINEAR, fill=[0.0] * 3)
        torch.testing.assert_close(y[i], ref, atol=1e-5, rtol=0)  # float64 matrix products vs one cos/sin


def test_rafdb_images_keep_their_colour(synth_root, tmp_path):
    """RAF-DB is RGB: the training data keep three channels unless rafdb_grey=true (issue: fidelity)."""
    from PIL import Image

    from fer_study.config import make_config
    from fer_study.data.synth import write_rafdb_layout
    from fer_study.training.data import load_splits, model_inputs

    root = tmp_path / "basic"
    write_rafdb_layout(synth_root, root, seed=0)
    for f in (root / "Image" / "aligned").glob("*.jpg"):  # SynthFER is grey: tint it, as real faces have colour
        r, g, b = Image.open(f).convert("RGB").split()
        Image.merge("RGB", (r, g.point(lambda v: v * 0.8), b.point(lambda v: v * 0.6))).save(f, quality=95)
    base = {"dataset": "rafdb", "rafdb_root": str(root), "model.num_classes": 7, "prior": "psr",
            "model.up": "bilinear", "model.down": "none", "max_train": 32}
    data = model_inputs(make_config("demo", base), load_splits(make_config("demo", base)), torch.device("cpu"),
                        progress=False)
    x = data["test"].images
    assert x.shape[1] == 3 and not torch.equal(x[:, 0], x[:, 1])
    grey = make_config("demo", {**base, "rafdb_grey": True})
    assert model_inputs(grey, load_splits(grey), torch.device("cpu"), progress=False)["test"].images.shape[1] == 1


def test_authors_schedule_decays_in_epoch_15_like_their_code():
    """The authors call StepLR(15, 0.25).step() at the start of each epoch: the first decay applies in
    epoch 15 (index 14), the second in epoch 30. The paper's schedule decays every 10 epochs."""
    from fer_study.config import make_config
    from fer_study.training.optim import make_scheduler

    def lrs(schedule: str) -> list[float]:
        p = torch.nn.Parameter(torch.zeros(1))
        opt = torch.optim.Adam([p], lr=1.0)
        sched = make_scheduler(make_config("paper", {"schedule": schedule}), opt, 10)
        out = []
        for _ in range(31):
            out.append(opt.param_groups[0]["lr"])
            opt.step()
            sched.step()  # once per epoch, after it
        return out

    authors = lrs("authors")
    ref_opt = torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    ref = torch.optim.lr_scheduler.StepLR(ref_opt, 15, 0.25)
    theirs = []
    for _ in range(31):  # their loop: scheduler.step() first, then the epoch
        ref.step()
        theirs.append(ref_opt.param_groups[0]["lr"])
    assert authors == pytest.approx(theirs)
    assert authors[13] == 1.0 and authors[14] == 0.25 and authors[29] == 0.0625
    paper = lrs("paper")
    assert paper[9] == 1.0 and paper[10] == 0.25 and paper[20] == 0.0625


def test_last_partial_batch_is_kept_like_the_authors_dataloader():
    from fer_study.training.loop import epoch_batches

    assert epoch_batches(10, 4, drop_last=False) == [(0, 4), (4, 8), (8, 10)]
    assert epoch_batches(10, 4, drop_last=True) == [(0, 4), (4, 8)]
    assert epoch_batches(9, 4, drop_last=False) == [(0, 4), (4, 8)]  # one image: BatchNorm cannot train on it
    assert epoch_batches(10, 4, drop_last=False, world=2) == [(0, 4), (4, 8)]  # DDP: equal step counts
    assert sum(e - s for s, e in epoch_batches(25045, 64, drop_last=False)) == 25045  # FERPlus train, every image
