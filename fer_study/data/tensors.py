"""Device-resident data and batched on-device augmentation.

The whole split lives as one uint8 tensor (N, C, H, W) on the training device (the SR cache for
SR settings); a batch is indexed, converted to float and augmented on that device, every image
with its own random draws.

The default :class:`AugmentConfig` is the authors' training transform (utils/dataloaders.py of
their code), as torchvision computes it on float tensors::

    RandomHorizontalFlip(), RandomRotation(45), RandomAffine(degrees=15, scale=[1.2, 1.2]),
    ColorJitter(brightness=0.4, contrast=0.4, saturation=0.4)

with torchvision's defaults: NEAREST interpolation, fill 0, rotation and affine as two resamplings,
the jitter factors applied in a random order per image. :func:`augment` reproduces
``torchvision.transforms.functional`` (tensor path) image by image with the same parameters
(``tests/test_fidelity.py``). The evaluation transform is deterministic (identity).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

INTERPOLATIONS = ("nearest", "bilinear")
GEOMETRIES = ("sequential", "fused")
JITTER_OPS = ("brightness", "contrast", "saturation")
#: torchvision's ``rgb_to_grayscale`` weights on tensors (PIL's ``convert("L")`` uses 0.299)
GRAY_WEIGHTS = (0.2989, 0.587, 0.114)


@dataclass
class AugmentConfig:
    """A flip / rotation / affine / colour-jitter chain; the defaults are the authors' (torchvision's
    ``RandomHorizontalFlip(), RandomRotation(45), RandomAffine(degrees=15, scale=[1.2, 1.2]),
    ColorJitter(0.4, 0.4, 0.4)``).

    ``rotation`` / ``affine_rotation``: angles drawn uniformly in +-value (degrees); ``scale``: the
    affine scale drawn uniformly in [lo, hi]; ``translate``: RandomAffine's fraction (integer pixel
    shifts up to value * size). Jitter factors are drawn in [1 - v, 1 + v] (clipped at 0) and applied
    in a random order per image, as ColorJitter does; saturation is a no-op on 1-channel images.
    ``interpolation``: ``nearest`` (torchvision's default) or ``bilinear``. ``geometry``:
    ``sequential`` (rotation, then affine: two resamplings, as torchvision) or ``fused`` (their
    composition in one resampling).
    """

    hflip: float = 0.5
    rotation: float = 45.0
    affine_rotation: float = 15.0
    scale: tuple[float, float] = (1.2, 1.2)
    translate: float = 0.0
    brightness: float = 0.4
    contrast: float = 0.4
    saturation: float = 0.4
    interpolation: str = "nearest"
    geometry: str = "sequential"

    def __post_init__(self) -> None:
        self.scale = (float(self.scale[0]), float(self.scale[1]))
        if self.interpolation not in INTERPOLATIONS:
            raise ValueError(f"interpolation must be one of {INTERPOLATIONS}, not {self.interpolation!r}")
        if self.geometry not in GEOMETRIES:
            raise ValueError(f"geometry must be one of {GEOMETRIES}, not {self.geometry!r}")
        if not 0 < self.scale[0] <= self.scale[1]:
            raise ValueError(f"scale must be a range 0 < lo <= hi, not {self.scale}")

    @classmethod
    def none(cls) -> AugmentConfig:
        return cls(hflip=0.0, rotation=0.0, affine_rotation=0.0, scale=(1.0, 1.0), brightness=0.0, contrast=0.0,
                   saturation=0.0)

    @classmethod
    def light(cls) -> AugmentConfig:
        """A milder chain for from-scratch CPU stand-ins: flip, rotation +-10 and scale 1-1.1 in one
        bilinear resampling, jitter 0.2."""
        return cls(rotation=10.0, affine_rotation=0.0, scale=(1.0, 1.1), brightness=0.2, contrast=0.2,
                   saturation=0.2, interpolation="bilinear", geometry="fused")

    @property
    def jitter_ops(self) -> tuple[str, ...]:
        """The enabled colour-jitter operations (those with a non-zero strength)."""
        return tuple(op for op in JITTER_OPS if getattr(self, op))


class DeviceData:
    """A split as uint8 tensors on ``device``: images (N, C, H, W), labels (N,), targets (N, K).

    On CUDA the images move to the GPU when they fit (at most ``max_fraction`` of the free memory);
    otherwise they stay in pinned CPU memory and :meth:`fetch` copies each batch over. Images may be
    (N, H, W), (N, C, H, W) or (N, H, W, C) with C = 1 or 3 (the RGB SR cache of FERPlus at 384 px is
    about 15.5 GB); a numpy array (e.g. the cache's memory map) is copied over in chunks, so the host
    never holds a second full copy.
    """

    def __init__(self, images: np.ndarray | torch.Tensor, labels: np.ndarray, targets: np.ndarray,
                 device: torch.device | str = "cpu", max_fraction: float = 0.6, chunk_bytes: int = 1 << 28) -> None:
        x = images
        if x.dtype not in (torch.uint8, np.uint8):
            raise TypeError(f"images must be uint8, got {x.dtype}")
        if x.ndim == 3:
            x = x[:, None]
        elif x.ndim == 4 and x.shape[-1] in (1, 3) and x.shape[1] not in (1, 3):
            x = x.permute(0, 3, 1, 2) if isinstance(x, torch.Tensor) else x.transpose(0, 3, 1, 2)
        self.device = torch.device(device)
        self.image_device = self.device
        numel = math.prod(x.shape)
        if self.device.type == "cuda":
            free, _ = torch.cuda.mem_get_info(self.device)
            if numel > max_fraction * free:
                self.image_device = torch.device("cpu")
        pin = self.image_device != self.device
        if isinstance(x, torch.Tensor):
            self.images = x.contiguous().to(self.image_device)
            if pin:
                self.images = self.images.pin_memory()
        else:
            self.images = torch.empty(tuple(x.shape), dtype=torch.uint8, device=self.image_device, pin_memory=pin)
            step = max(1, chunk_bytes // max(1, numel // max(1, len(x))))
            for s in range(0, len(x), step):
                self.images[s:s + step].copy_(torch.from_numpy(np.array(x[s:s + step])))  # writable copy
        self.labels = torch.as_tensor(np.asarray(labels), dtype=torch.long, device=self.device)
        self.targets = torch.as_tensor(np.asarray(targets), dtype=torch.float32, device=self.device)
        if not (len(self.images) == len(self.labels) == len(self.targets)):
            raise ValueError("images, labels and targets differ in length")

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def on_device(self) -> bool:
        return self.image_device == self.device

    def fetch(self, idx: torch.Tensor) -> torch.Tensor:
        """uint8 images of ``idx`` on the compute device."""
        if self.on_device:
            return self.images[idx]
        return self.images[idx.cpu()].to(self.device, non_blocking=True)

    def batches(self, batch_size: int, shuffle: bool, generator: torch.Generator | None = None,
                drop_last: bool = False, indices: torch.Tensor | None = None):
        """Yield index tensors of each batch (on the data's device)."""
        idx = torch.arange(len(self), device=self.device) if indices is None else indices.to(self.device)
        if shuffle:
            perm = torch.randperm(len(idx), generator=generator, device="cpu").to(self.device)
            idx = idx[perm]
        n = len(idx)
        stop = n - (n % batch_size) if drop_last else n
        for s in range(0, stop, batch_size):
            yield idx[s:s + batch_size]


def to_float(x: torch.Tensor) -> torch.Tensor:
    """uint8 (B, C, H, W) -> float in [0, 1]."""
    return x.float().div_(255.0)


@dataclass
class AugmentParams:
    """The per-image draws of :func:`draw_params` (CPU tensors), in torchvision's terms: ``F.hflip`` if
    ``flip``, ``F.rotate(angle)``, ``F.affine(affine_angle, translate, scale, shear=0)``, then the
    jitter ops ``order`` (indices into :data:`JITTER_OPS`) with ``factors`` (B, 3: brightness,
    contrast, saturation; 1 = unchanged)."""

    flip: torch.Tensor  # (B,) bool
    angle: torch.Tensor  # (B,) float64, degrees (RandomRotation)
    affine_angle: torch.Tensor  # (B,) float64, degrees (RandomAffine)
    scale: torch.Tensor  # (B,) float64
    translate: torch.Tensor  # (B, 2) float64, whole pixels (x, y)
    factors: torch.Tensor  # (B, 3) float64
    order: torch.Tensor  # (B, k) int64, k = len(cfg.jitter_ops)

    def image(self, i: int) -> dict:
        """Image ``i``'s parameters as plain Python values (for torchvision's functional API)."""
        return {"flip": bool(self.flip[i]), "angle": float(self.angle[i]), "affine_angle": float(self.affine_angle[i]),
                "scale": float(self.scale[i]), "translate": [int(t) for t in self.translate[i].tolist()],
                "order": [JITTER_OPS[j] for j in self.order[i].tolist()],
                **{op: float(self.factors[i, j]) for j, op in enumerate(JITTER_OPS)}}


def draw_params(batch: int, cfg: AugmentConfig, generator: torch.Generator, size: tuple[int, int]) -> AugmentParams:
    """Draw every image's parameters from ``generator`` on the host (one ``torch.rand`` call, float64;
    the same draws whatever the device). ``size`` = (H, W), for the translation range.

    Ranges as torchvision's: angles uniform in +-``rotation`` / +-``affine_rotation``, scale uniform in
    ``cfg.scale`` (exactly 1.2 for [1.2, 1.2]), translation rounded to whole pixels, jitter factors
    uniform in [max(0, 1 - v), 1 + v], the order of the enabled jitter ops a uniform permutation.
    """
    u = torch.rand(batch, 6 + 2 * len(JITTER_OPS), generator=generator, dtype=torch.float64)
    lo, hi = cfg.scale
    h, w = size
    shift = torch.tensor([cfg.translate * w, cfg.translate * h], dtype=torch.float64)
    factors = torch.stack([max(0.0, 1.0 - v) + u[:, 6 + j] * (1.0 + v - max(0.0, 1.0 - v))
                           for j, v in enumerate(getattr(cfg, op) for op in JITTER_OPS)], 1)
    enabled = torch.tensor([JITTER_OPS.index(op) for op in cfg.jitter_ops], dtype=torch.long)
    keys = u[:, 6 + len(JITTER_OPS):][:, enabled]
    return AugmentParams(flip=u[:, 0] < cfg.hflip, angle=(u[:, 1] * 2 - 1) * cfg.rotation,
                         affine_angle=(u[:, 2] * 2 - 1) * cfg.affine_rotation, scale=lo + u[:, 3] * (hi - lo),
                         translate=torch.round((u[:, 4:6] * 2 - 1) * shift), factors=factors,
                         order=enabled[keys.argsort(1)])


def _inverse_matrix(angle: float, scale: float = 1.0, tx: float = 0.0, ty: float = 0.0) -> list[float]:
    """torchvision's ``_get_inverse_affine_matrix`` at the image centre without shear, in the same
    float64 operations: output pixel (centred coordinates) -> input pixel."""
    rot = math.radians(angle)
    m = [x / scale for x in (math.cos(rot), math.sin(rot), 0.0, -math.sin(rot), math.cos(rot), 0.0)]
    m[2] += m[0] * (-0.0 - tx) + m[1] * (-0.0 - ty)
    m[5] += m[3] * (-0.0 - tx) + m[4] * (-0.0 - ty)
    return m


def _compose(a: list[float], b: list[float]) -> list[float]:
    """The inverse matrix of warping by ``a`` then by ``b`` (sampling x(a(b(p))))."""
    return [a[0] * b[0] + a[1] * b[3], a[0] * b[1] + a[1] * b[4], a[0] * b[2] + a[1] * b[5] + a[2],
            a[3] * b[0] + a[4] * b[3], a[3] * b[1] + a[4] * b[4], a[3] * b[2] + a[4] * b[5] + a[5]]


def _rescaled(mats: list[list[float]], h: int, w: int) -> torch.Tensor:
    """(B, 6) float32: torchvision's ``theta.transpose(1, 2) / [w/2, h/2]`` for each matrix, computed
    on the host (float32, as torchvision computes it)."""
    theta = torch.tensor(mats, dtype=torch.float32).view(-1, 2, 3)
    return (theta.transpose(1, 2) / torch.tensor([0.5 * w, 0.5 * h], dtype=torch.float32)).reshape(-1, 6)


def _warp(x: torch.Tensor, theta: torch.Tensor, mode: str) -> torch.Tensor:
    """torchvision's tensor ``rotate``/``affine`` (``_gen_affine_grid`` + ``_apply_grid_transform``
    with fill 0) for a batch: ``theta`` (B, 3, 2) rescaled inverse matrices on x's device."""
    b, c, h, w = x.shape
    # torchvision: [x, y, 1] (pixel centres) @ theta by bmm; the same sums as separate elementwise ops
    # give the same float32 grid on the CPU (checked in the tests) and on CUDA (no GEMM rounding path)
    gx = torch.linspace(-w * 0.5 + 0.5, w * 0.5 + 0.5 - 1, steps=w, device=x.device, dtype=theta.dtype).view(1, 1, w, 1)
    gy = torch.linspace(-h * 0.5 + 0.5, h * 0.5 + 0.5 - 1, steps=h, device=x.device, dtype=theta.dtype).view(1, h, 1, 1)
    t = theta.view(b, 3, 1, 1, 2)
    grid = gx * t[:, 0] + gy * t[:, 1] + t[:, 2]
    if mode == "nearest":  # out-of-image samples are 0 already: torchvision's fill mask changes nothing
        return F.grid_sample(x, grid, mode="nearest", padding_mode="zeros", align_corners=False)
    # bilinear with fill 0: torchvision samples a ones-mask alongside and multiplies by it
    y = F.grid_sample(torch.cat([x, x.new_ones(b, 1, h, w)], 1), grid, mode="bilinear", padding_mode="zeros",
                      align_corners=False)
    return y[:, :c] * y[:, c:]


def augment(x: torch.Tensor, cfg: AugmentConfig, generator: torch.Generator, return_params: bool = False):
    """Augment a float batch (B, C, H, W), C = 1 or 3, in [0, 1] on its device; deterministic given
    ``generator``. ``return_params``: also return the :class:`AugmentParams` drawn.

    The draws come from ``generator`` on the host (:func:`draw_params`) and every host decision uses
    them, never the device; on CUDA the per-image numbers travel in one pinned non-blocking copy, so
    the step never waits for the GPU. Per image the result is torchvision's (tensor path):
    ``hflip``, ``rotate(angle)``, ``affine(affine_angle, translate, scale, 0)`` (``cfg.interpolation``,
    fill 0), then brightness / contrast / saturation in the drawn order, each clamped to [0, 1].
    """
    b, c, h, w = x.shape
    if c not in (1, 3):
        raise ValueError(f"augment expects 1 or 3 channels, got {c}")
    p = draw_params(b, cfg, generator, (h, w))
    y = apply_params(x, p, cfg)
    return (y, p) if return_params else y


def apply_params(x: torch.Tensor, p: AugmentParams, cfg: AugmentConfig) -> torch.Tensor:
    """Apply drawn parameters (see :func:`augment`); ``cfg`` decides which stages run and how."""
    b, c, h, w = x.shape
    flip_any = bool(p.flip.any())  # host tensors: no device sync
    mats: list[list[list[float]]] = []
    if cfg.rotation:
        mats.append([_inverse_matrix(-a) for a in p.angle.tolist()])  # rotate() passes -angle, as torchvision
    if cfg.affine_rotation or cfg.scale != (1.0, 1.0) or cfg.translate:
        mats.append([_inverse_matrix(a, s, t[0], t[1])
                     for a, s, t in zip(p.affine_angle.tolist(), p.scale.tolist(), p.translate.tolist())])
    if cfg.geometry == "fused" and len(mats) == 2:
        mats = [[_compose(r, a) for r, a in zip(*mats)]]
    # jitter, one step per enabled op: y = clamp(f * x + (1 - f) * g) with g = 0 (brightness), the mean
    # of the grayscale image (contrast) or the grayscale image (saturation; identity on 1 channel)
    steps = []
    for k in range(p.order.shape[1]):
        op = p.order[:, k]
        f = p.factors.gather(1, op[:, None])[:, 0]
        sat = op == JITTER_OPS.index("saturation")
        if c == 1:
            f = torch.where(sat, 1.0, f)
            sat = torch.zeros_like(sat)
        con = op == JITTER_OPS.index("contrast")
        steps.append((torch.stack([f, 1.0 - f, con.double(), sat.double()], 1), bool(con.any()), bool(sat.any())))
    cols = ([p.flip.float()[:, None]] if flip_any else []) + [_rescaled(m, h, w) for m in mats] + \
        [s[0].float() for s in steps]
    if not cols:
        return x
    v = torch.cat(cols, 1)
    if x.device.type == "cuda":  # one small pinned, asynchronous copy; the rest is computed on the GPU
        v = v.pin_memory().to(x.device, non_blocking=True)
    else:
        v = v.to(x.device)
    v = v.to(x.dtype)
    i = 0
    if flip_any:
        x = torch.where(v[:, 0].view(b, 1, 1, 1) > 0.5, x.flip(-1), x)
        i = 1
    for _ in mats:
        x = _warp(x, v[:, i:i + 6].reshape(b, 3, 2), cfg.interpolation)
        i += 6
    for _, any_con, any_sat in steps:  # terms no image of the step needs are skipped (they add exact zeros)
        f, g1, con, sat = (v[:, i + j].view(b, 1, 1, 1) for j in range(4))
        i += 4
        if not (any_con or any_sat):
            x = (f * x).clamp_(0, 1)
            continue
        gray = x if c == 1 else GRAY_WEIGHTS[0] * x[:, 0:1] + GRAY_WEIGHTS[1] * x[:, 1:2] + GRAY_WEIGHTS[2] * x[:, 2:3]
        g = gray.mean(dim=(1, 2, 3), keepdim=True) * con if any_con else None
        if any_sat:
            g = gray * sat if g is None else g + gray * sat
        x = (f * x + g1 * g).clamp_(0, 1)
    return x


#: The training transforms a run can choose (``TrainConfig.augment``): the authors' (Sec. 3.2 and
#: their code), a light one for the from-scratch CPU stand-ins, and none.
AUGMENTS = {
    "authors": AugmentConfig(),
    "light": AugmentConfig.light(),
    "none": AugmentConfig.none(),
}
