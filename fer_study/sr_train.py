"""Train and evaluate ``facesr`` on (low-res, high-res) face pairs; PSNR and SSIM against bicubic."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from fer_study.models.facesr import FaceSR
from fer_study.models.sr import save_facesr


def synthfer_pairs(root: str | Path, hr_size: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """SynthFER's (LR 48x48, clean HR render) pairs, aligned by row of fer2013.csv.

    ``hr_size`` resizes the renders (area filter), e.g. 96 for a x2 model."""
    from fer_study.data.ferplus import read_fer2013
    from fer_study.data.synth import load_hr

    hr = np.asarray(load_hr(root))
    _, lr = read_fer2013(Path(root) / "fer2013.csv")
    if hr_size is not None and hr_size != hr.shape[-1]:
        t = torch.from_numpy(hr)[:, None].float()
        hr = F.interpolate(t, size=(hr_size, hr_size), mode="area").round().clamp(0, 255).to(torch.uint8)[:, 0].numpy()
    return lr[:len(hr)], hr


def folder_pairs(folder: str | Path, lr_size: int = 48, scale: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """Pairs from any folder of face images: HR = image resized to lr_size*scale, LR = its bicubic downscale.
    An image smaller than lr_size*scale is an error naming it (its HR target would be an upsampling)."""
    from PIL import Image

    from fer_study.errors import ConfigError, DataError

    check_pair_sizes(lr_size, scale)
    if not Path(folder).is_dir():
        raise DataError(f"--folder {folder}: no such folder")
    hr_size = lr_size * scale
    hrs, lrs = [], []
    for p in sorted(Path(folder).iterdir()):
        if p.suffix.lower() not in (".png", ".jpg", ".jpeg"):
            continue
        with Image.open(p) as im:
            if min(im.size) < hr_size:
                raise ConfigError(f"{p}: {im.size[0]}x{im.size[1]} px, smaller than the {hr_size} px HR target of "
                                  f"--lr-size {lr_size} x --scale {scale}; the target would be an upsampling "
                                  f"(48 px FERPlus faces: --lr-size 24 --scale 2)")
            h = im.convert("L").resize((hr_size,) * 2, Image.BICUBIC)
        hrs.append(np.asarray(h))
        lrs.append(np.asarray(h.resize((lr_size,) * 2, Image.BICUBIC)))
    if not hrs:
        raise DataError(f"--folder {folder}: no .png/.jpg images in it")
    return np.stack(lrs), np.stack(hrs)


def check_pair_sizes(lr_size: int, scale: int) -> None:
    """``lr_size`` >= 1, ``scale`` >= 2 and an HR size of at least 11 px (SSIM's window)."""
    from fer_study.errors import ConfigError

    if lr_size < 1 or scale < 2:
        raise ConfigError(f"--lr-size {lr_size} --scale {scale}: expected a size >= 1 and a scale >= 2")
    if lr_size * scale < 11:
        raise ConfigError(f"--lr-size {lr_size} --scale {scale}: HR images of {lr_size * scale} px are smaller than "
                          "SSIM's 11 px window")


def check_holdout(holdout: float, command: str) -> None:
    """A held-out fraction in [0, 1]; ``train`` needs pairs left to train on, ``eval`` pairs held out."""
    from fer_study.errors import ConfigError

    if not 0 <= holdout <= 1:
        raise ConfigError(f"--holdout {holdout}: expected a fraction in [0, 1]")
    if command == "train" and holdout == 1:
        raise ConfigError("--holdout 1: every pair would be held out, none left to train on")
    if command == "eval" and holdout == 0:
        raise ConfigError("--holdout 0: no pair is held out to evaluate on (a test folder: --holdout 1)")


def split_pairs(n: int, holdout: float = 0.15, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(train, held-out) indices of ``n`` pairs, a seeded permutation; ``holdout`` in [0, 1] (0: none
    held out, 1: all; otherwise at least one)."""
    if not 0 <= holdout <= 1:
        from fer_study.errors import ConfigError

        raise ConfigError(f"holdout={holdout}: expected a fraction in [0, 1]")
    idx = np.random.default_rng(seed).permutation(n)
    k = 0 if holdout == 0 else max(1, int(round(holdout * n)))
    return np.sort(idx[k:]), np.sort(idx[:k])


def train_facesr(lr: np.ndarray, hr: np.ndarray, out: str | Path, steps: int = 400, batch_size: int = 16,
                 patch: int = 24, lr_rate: float = 1e-3, seed: int = 0, nf: int = 32, blocks: int = 4,
                 device: str = "cpu", progress: bool = True, source: str | None = None,
                 holdout: float | None = None, n_pairs: int | None = None) -> dict:
    """L1 training on random aligned patches; writes a facesr checkpoint to ``out`` (with ``source``,
    what the pairs came from, in its metadata). ``holdout`` and ``n_pairs`` (all pairs, before
    :func:`split_pairs` held some out) only word the error when no pair is left to train on."""
    from fer_study.errors import ConfigError

    if len(lr) == 0:
        if holdout is not None and n_pairs is not None:
            raise ConfigError(f"no training pairs left: holdout={holdout} holds out {n_pairs - len(lr)} of "
                              f"{n_pairs} pairs")
        raise ConfigError("no training pairs left: 0 pairs given (a holdout near 1 can hold every pair out)")
    if patch > lr.shape[-1]:
        raise ConfigError(f"patch={patch}: larger than the {lr.shape[-1]} px low-resolution images")
    scale = hr.shape[-1] // lr.shape[-1]
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    model = FaceSR(scale=scale, nf=nf, blocks=blocks).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=lr_rate)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    L, H = torch.from_numpy(np.array(lr)), torch.from_numpy(np.array(hr))
    t0, losses = time.perf_counter(), []
    for _ in tqdm(range(steps), desc="facesr train", disable=not progress):
        i = rng.integers(0, len(L), batch_size)
        y0 = rng.integers(0, L.shape[-1] - patch + 1, batch_size)
        x0 = rng.integers(0, L.shape[-1] - patch + 1, batch_size)
        xb = torch.stack([L[a, b:b + patch, c:c + patch] for a, b, c in zip(i, y0, x0)])[:, None]
        yb = torch.stack([H[a, b * scale:(b + patch) * scale, c * scale:(c + patch) * scale]
                          for a, b, c in zip(i, y0, x0)])[:, None]
        xb, yb = xb.float().div(255).to(device), yb.float().div(255).to(device)
        loss = F.l1_loss(model(xb), yb)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        losses.append(float(loss.detach()))
    info = {"steps": steps, "batch_size": batch_size, "patch": patch, "seed": seed, "scale": scale,
            "train_pairs": int(len(L)), "lr_size": int(L.shape[-1]), "source": source, "holdout": holdout,
            "n_pairs": n_pairs,
            "final_l1": float(np.mean(losses[-20:])),
            "seconds": round(time.perf_counter() - t0, 1)}
    save_facesr(model.cpu(), out, {"train": info})
    return info


def psnr(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-image PSNR (dB) of images in [0, 1], shape (B, C, H, W)."""
    mse = ((a - b) ** 2).flatten(1).mean(1).clamp_min(1e-10)
    return 10 * torch.log10(1.0 / mse)


def ssim(a: torch.Tensor, b: torch.Tensor, window: int = 11, sigma: float = 1.5) -> torch.Tensor:
    """Per-image SSIM (Wang et al. 2004; Gaussian window 11, sigma 1.5, K1 0.01, K2 0.03, range 1)."""
    c = a.shape[1]
    g = torch.arange(window, dtype=torch.float64) - window // 2
    g = torch.exp(-(g ** 2) / (2 * sigma ** 2))
    g = (g / g.sum()).float()
    k = (g[:, None] * g[None, :]).expand(c, 1, window, window).contiguous().to(a)

    def blur(x):
        return F.conv2d(x, k, groups=c)
    mu_a, mu_b = blur(a), blur(b)
    saa, sbb, sab = blur(a * a) - mu_a ** 2, blur(b * b) - mu_b ** 2, blur(a * b) - mu_a * mu_b
    c1, c2 = 0.01 ** 2, 0.03 ** 2
    m = ((2 * mu_a * mu_b + c1) * (2 * sab + c2)) / ((mu_a ** 2 + mu_b ** 2 + c1) * (saa + sbb + c2))
    return m.flatten(1).mean(1)


def evaluate_sr(lr: np.ndarray, hr: np.ndarray, resolvers: dict, batch_size: int = 32) -> dict:
    """Mean PSNR/SSIM of each SuperResolver against the HR images."""
    out = {}
    H = torch.from_numpy(np.asarray(hr))[:, None].float() / 255
    L = torch.from_numpy(np.asarray(lr))[:, None]
    for name, sr in resolvers.items():
        ps, ss = [], []
        with torch.no_grad():
            for s in range(0, len(L), batch_size):
                y = (sr(L[s:s + batch_size]) * 255).round() / 255  # as stored in the uint8 cache
                ps.append(psnr(y, H[s:s + batch_size]))
                ss.append(ssim(y, H[s:s + batch_size]))
        p, q = torch.cat(ps), torch.cat(ss)
        out[name] = {"psnr": round(float(p.mean()), 3), "psnr_std": round(float(p.std()), 3),
                     "ssim": round(float(q.mean()), 4), "ssim_std": round(float(q.std()), 4), "n": int(len(p))}
    return out
