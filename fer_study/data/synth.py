"""SynthFER: the study's embedded facial-expression data set, generated procedurally.

Faces are drawn at ``hr_size`` (default 192, i.e. x4 of 48) and downsampled to 48x48 grayscale.
Expression cues are carried partly by coarse geometry (eyebrow height and angle, eye opening,
mouth curvature/opening/asymmetry) and partly by fine detail (forehead, nasolabial and nose
wrinkles, thin lip lines), drawn 4 px wide at 192, i.e. 1 px wide and about 2 px apart at 48:
aliased at 48 px and merged when the image is blurred, so up- and down-scaling have something to
act on; fear vs. surprise and disgust vs. anger differ mostly in such detail. Identity varies in
face shape and feature positions (skin 170-180 and background 35-45 grey levels, no hair), pose
and light barely (rotation +-1 deg, scale 0.99-1.01, shift +-1 %, side light +-2 %, gamma
0.97-1.03): with generator 2's wide ranges (skin 125-215, background 20-235, rotation +-10 deg,
light +-35 %, gamma 0.75-1.35) the CPU stand-ins sat at the majority class for 1-3 epochs and the
demo's seeds fell on either side of that plateau. The degradations are what resolution acts on
and stay: occlusion (8 %), blur (30 %, sigma 1-4 px at 192) and noise (sigma 4 grey levels at 48).
Label noise comes from the simulated annotators below; class imbalance from FERPlus's training
counts. The README's SynthFER table lists every part with its size.

Eight FERPlus classes with FERPlus's training imbalance (``imbalance`` < 1 flattens it).
Ten simulated annotators vote per image: they are right more often for intense, clean images,
otherwise confuse plausible pairs (fear/surprise, disgust/anger, contempt/neutral,
sadness/neutral, weak expressions towards neutral) and rarely answer unknown or not-a-face.
A few rendered "non-faces" are voted not-a-face.

Written in the official FERPlus formats (``fer2013.csv`` + ``fer2013new.csv``, rows aligned) so
:func:`fer_study.data.ferplus.load_ferplus` reads it, plus ``hr_<size>.npy`` with the clean
high-resolution renders of the first ``n_hr`` rows (pairs for super-resolution), ``truth.csv``
(true class, intensity, quality) and ``synthfer.json`` (generator settings). Optionally also the
RAF-DB ``basic/`` layout (:func:`write_rafdb_layout`).
"""

from __future__ import annotations

import csv
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from fer_study.classes import FER2013_CLASSES, FERPLUS_CLASSES, FERPLUS_VOTE_COLUMNS, RAFDB_TO_FERPLUS
from fer_study.io import atomic_write, write_json

GENERATOR_VERSION = 3  # 3: fine cues 1 px wide and about 2 px apart at 48 px (were a quarter pixel)
#: The demo's split (train, valid, test): test-heavy, so that 3,000 images give about 1,150 test
#: images (one image = 0.09 points) while training stays CPU-sized (1,500 images; 45/10/45, 1,350 training
#: images, put 4 of 21 demo cells above a 2-point seed std). FERPlus itself is 80/10/10.
DEMO_SPLIT = (0.5, 0.1, 0.4)
#: FERPlus training-set class counts (majority, label.csv), FERPlus order.
FERPLUS_TRAIN_COUNTS = np.array([8733, 7284, 3136, 3022, 2098, 116, 536, 120], dtype=np.float64)

# Expression prototypes at full intensity: brow_raise, brow_tilt (inner end up > 0), eye_open,
# mouth_curve (smile > 0), mouth_open, mouth_width, mouth_asym, forehead, nasolabial, nose_wrinkle
_KEYS = ("brow_raise", "brow_tilt", "eye_open", "mouth_curve", "mouth_open", "mouth_width",
         "mouth_asym", "forehead", "nasolabial", "nose_wrinkle")
_PROTO = {
    "neutral":   (0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0),
    "happiness": (0.1, 0.0, -0.3, 1.0, 0.35, 0.3, 0.0, 0.0, 1.0, 0.0),
    "surprise":  (1.0, 0.1, 0.6, 0.0, 1.0, -0.25, 0.0, 1.0, 0.0, 0.0),
    "sadness":   (0.15, 0.9, -0.15, -0.9, 0.0, -0.05, 0.0, 0.3, 0.0, 0.0),
    "anger":     (-0.7, -1.0, -0.2, -0.25, 0.1, -0.1, 0.0, 0.0, 0.2, 0.4),
    "disgust":   (-0.4, -0.45, -0.35, -0.45, 0.25, 0.0, 0.0, 0.0, 0.9, 1.0),
    "fear":      (0.75, 0.7, 0.5, -0.15, 0.6, 0.25, 0.0, 0.8, 0.0, 0.0),
    "contempt":  (0.05, 0.0, -0.1, 0.15, 0.0, 0.0, 1.0, 0.0, 0.4, 0.0),
}
# Plausible confusions of annotators (true class -> {confused class: weight}).
_CONFUSE = {
    "neutral": {"sadness": 3, "contempt": 2, "happiness": 1, "anger": 1},
    "happiness": {"neutral": 3, "contempt": 1, "surprise": 1},
    "surprise": {"fear": 4, "happiness": 1, "neutral": 1},
    "sadness": {"neutral": 4, "fear": 1, "anger": 1},
    "anger": {"disgust": 3, "sadness": 1, "neutral": 1},
    "disgust": {"anger": 4, "sadness": 1, "contempt": 1},
    "fear": {"surprise": 4, "sadness": 1},
    "contempt": {"neutral": 4, "happiness": 1, "disgust": 1},
}


@dataclass
class SynthConfig:
    n: int = 2000
    seed: int = 0
    hr_size: int = 192
    lr_size: int = 48
    n_hr: int | None = None  # default: min(n, 3000)
    imbalance: float = 1.0  # exponent on FERPlus class frequencies (1 = FERPlus-like, 0 = uniform)
    split_fractions: tuple[float, float, float] = (0.8, 0.1, 0.1)
    p_nonface: float = 0.004
    p_occlusion: float = 0.08
    p_blur: float = 0.3
    noise_std: float = 4.0


def class_frequencies(imbalance: float = 1.0) -> np.ndarray:
    f = (FERPLUS_TRAIN_COUNTS / FERPLUS_TRAIN_COUNTS.sum()) ** imbalance
    return f / f.sum()


def _curve(p0, p1, p2, n: int = 12) -> list[tuple[float, float]]:
    """Quadratic Bezier from p0 to p2 with control p1."""
    t = np.linspace(0.0, 1.0, n)[:, None]
    pts = (1 - t) ** 2 * np.asarray(p0) + 2 * (1 - t) * t * np.asarray(p1) + t ** 2 * np.asarray(p2)
    return [tuple(p) for p in pts]


def render_face(expr: dict[str, float], ident: dict[str, float], size: int) -> Image.Image:
    """Draw one frontal face (grayscale, ``size`` x ``size``) with the given expression."""
    s = size
    img = Image.new("L", (s, s), int(ident["bg"]))
    d = ImageDraw.Draw(img)
    cx, cy = s * (0.5 + ident["dx"]), s * 0.52
    fw, fh = s * ident["face_w"], s * ident["face_h"]
    skin = int(ident["skin"])
    dark = max(0, skin - 95)
    line = max(1, round(s / 192))  # outlines (eyes, nose): about 1 px at 192
    fine = max(1, round(s / 48))  # fine cues: 1 px wide at 48 px (4 px at 192), about 2 px apart
    if ident["hair"] > 0.3:
        d.ellipse([cx - fw * 1.08, cy - fh * 1.12, cx + fw * 1.08, cy + fh * 0.35], fill=int(ident["hair_tone"]))
    d.ellipse([cx - fw, cy - fh, cx + fw, cy + fh], fill=skin)
    # eyebrows: inner end moves with tilt, both with raise
    ey, es = cy - fh * ident["eye_y"], fw * ident["eye_sep"]
    by = ey - fh * (0.17 + 0.13 * expr["brow_raise"])
    bw = max(2, round(s * 0.028 * ident["brow_w"]))
    for side in (-1, 1):
        inner = (cx + side * fw * 0.12, by - fh * 0.11 * expr["brow_tilt"])
        outer = (cx + side * fw * 0.62, by + fh * 0.05 * expr["brow_tilt"] + fh * 0.02)
        mid = ((inner[0] + outer[0]) / 2, min(inner[1], outer[1]) - fh * 0.03)
        d.line(_curve(inner, mid, outer), fill=dark, width=bw)
    # eyes: opening scales height; iris dark
    eh = fh * 0.07 * max(0.2, 1.0 + 1.3 * expr["eye_open"])
    ew = fw * 0.19
    for side in (-1, 1):
        ex = cx + side * es
        d.ellipse([ex - ew, ey - eh, ex + ew, ey + eh], fill=min(255, skin + 45), outline=dark, width=line)
        r = min(eh, ew * 0.5)
        d.ellipse([ex - r, ey - r, ex + r, ey + r], fill=max(0, skin - 120))
    # nose
    ny = cy + fh * 0.12
    d.line([(cx, ey + fh * 0.02), (cx - fw * 0.06, ny), (cx + fw * 0.08, ny + fh * 0.02)],
           fill=max(0, skin - 45), width=line)
    # fine detail: wrinkles
    if expr["nose_wrinkle"] > 0.15:
        for k in range(3):
            yy = ey + fh * (0.04 + 0.09 * k)
            w = fw * 0.16 * min(1.0, expr["nose_wrinkle"])
            d.line([(cx - w, yy), (cx + w, yy + fh * 0.005)], fill=max(0, skin - 55), width=fine)
    if expr["forehead"] > 0.15:
        for k in range(3):
            yy = by - fh * (0.07 + 0.09 * k)
            w = fw * 0.45 * min(1.0, expr["forehead"])
            d.line(_curve((cx - w, yy), (cx, yy - fh * 0.03), (cx + w, yy)), fill=max(0, skin - 50), width=fine)
    my = cy + fh * ident["mouth_y"]
    mw = fw * 0.36 * (1.0 + 0.35 * expr["mouth_width"])
    if expr["nasolabial"] > 0.15:
        for side in (-1, 1):
            p0 = (cx + side * fw * 0.16, ny - fh * 0.02)
            p2 = (cx + side * (mw + fw * 0.06), my + fh * 0.04)
            p1 = (cx + side * (mw + fw * 0.1) * (0.8 + 0.2 * expr["nasolabial"]), (p0[1] + p2[1]) / 2)
            d.line(_curve(p0, p1, p2), fill=max(0, skin - 40 - int(25 * expr["nasolabial"])), width=fine)
    # mouth: corners move with curvature (and asymmetry for contempt), opening parts the lips
    curve = fh * 0.11 * expr["mouth_curve"]
    left = (cx - mw, my - curve + fh * 0.06 * expr["mouth_asym"] * 0.0)
    right = (cx + mw, my - curve - fh * 0.13 * expr["mouth_asym"])
    open_h = fh * 0.2 * max(0.0, expr["mouth_open"])
    upper = _curve(left, (cx, my + curve * 0.6 - open_h * 0.45), right)
    lower = _curve(right, (cx, my + curve * 0.6 + open_h * 1.1 + fh * 0.01), left)
    if open_h > fh * 0.012:
        d.polygon(upper + lower, fill=max(0, skin - 130), outline=max(0, skin - 80))
    else:
        d.line(upper, fill=max(0, skin - 85), width=max(line, round(s * 0.012)))
        d.line(_curve((cx - mw * 0.5, my + fh * 0.05), (cx, my + fh * 0.065), (cx + mw * 0.5, my + fh * 0.05)),
               fill=max(0, skin - 35), width=fine)  # thin lower-lip line: fine detail
    return img


def _nonface(rng: np.random.Generator, size: int) -> Image.Image:
    arr = rng.normal(128, 50, (size // 8, size // 8)).clip(0, 255).astype(np.uint8)
    return Image.fromarray(arr).resize((size, size), Image.BILINEAR)


def _identity(rng: np.random.Generator) -> dict[str, float]:
    return {
        "face_w": rng.uniform(0.29, 0.36), "face_h": rng.uniform(0.38, 0.45),
        "skin": rng.uniform(170, 180), "bg": rng.uniform(35, 45), "hair": 0.0,
        "hair_tone": rng.uniform(10, 90), "eye_y": rng.uniform(0.14, 0.24),
        "eye_sep": rng.uniform(0.36, 0.46), "mouth_y": rng.uniform(0.48, 0.58),
        "brow_w": rng.uniform(0.8, 1.4), "dx": rng.uniform(-0.02, 0.02),
    }


def _expression(cls: str, intensity: float, rng: np.random.Generator) -> dict[str, float]:
    proto = np.asarray(_PROTO[cls])
    jitter = rng.normal(0.0, 0.08, len(_KEYS))
    jitter[7:] = 0.0  # wrinkles only come with the expression
    vals = proto * intensity + jitter
    return dict(zip(_KEYS, vals.tolist()))


def _pose_light(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    s = img.size[0]
    angle, scale = rng.uniform(-1, 1), rng.uniform(0.99, 1.01)
    tx, ty = rng.uniform(-0.01, 0.01) * s, rng.uniform(-0.01, 0.01) * s
    a = math.radians(angle)
    cos, sin = math.cos(a) / scale, math.sin(a) / scale
    c = s / 2
    coeffs = (cos, sin, c - cos * (c + tx) - sin * (c + ty), -sin, cos, c + sin * (c + tx) - cos * (c + ty))
    img = img.transform(img.size, Image.AFFINE, coeffs, resample=Image.BILINEAR, fillcolor=int(img.getpixel((0, 0))))
    arr = np.asarray(img, dtype=np.float32) / 255.0
    xs = np.linspace(-1, 1, s, dtype=np.float32)
    light = 1.0 + rng.uniform(-0.02, 0.02) * xs[None, :] + rng.uniform(-0.01, 0.01) * xs[:, None]
    arr = np.clip(arr * light, 0, 1) ** rng.uniform(0.97, 1.03)
    return Image.fromarray((arr * 255).round().astype(np.uint8))


def _occlude(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    s = img.size[0]
    d = ImageDraw.Draw(img)
    tone = int(rng.uniform(0, 255))
    if rng.uniform() < 0.5:  # a bar over the eyes (glasses, hair)
        y = s * rng.uniform(0.3, 0.42)
        d.rectangle([s * 0.15, y, s * 0.85, y + s * rng.uniform(0.06, 0.12)], fill=tone)
    else:  # a hand or object over the lower face
        x0, y0 = s * rng.uniform(0.1, 0.5), s * rng.uniform(0.6, 0.75)
        d.ellipse([x0, y0, x0 + s * rng.uniform(0.3, 0.5), y0 + s * 0.4], fill=tone)
    return img


def simulate_votes(cls: int, intensity: float, quality: float, nonface: bool,
                   rng: np.random.Generator, n_annotators: int = 10) -> np.ndarray:
    """Ten annotators' votes over the 10 FERPlus vote columns."""
    votes = np.zeros(10, dtype=np.int64)
    name = FERPLUS_CLASSES[cls]
    conf = _CONFUSE[name]
    names, weights = list(conf), np.asarray(list(conf.values()), dtype=np.float64)
    for _ in range(n_annotators):
        u = rng.uniform()
        if nonface:
            votes[9 if u < 0.8 else 8 if u < 0.9 else rng.integers(0, 8)] += 1
            continue
        if u < 0.01 + 0.04 * (1 - quality):
            votes[8] += 1  # unknown
            continue
        if u < 0.012 + 0.04 * (1 - quality):
            votes[9] += 1
            continue
        p_right = (0.8 if name == "neutral" else 0.4 + 0.5 * intensity) * (0.7 + 0.3 * quality)
        if rng.uniform() < p_right:
            votes[cls] += 1
        elif name != "neutral" and rng.uniform() < 0.6 * (1 - intensity):
            votes[0] += 1  # a weak expression reads as neutral
        else:
            votes[FERPLUS_CLASSES.index(names[rng.choice(len(names), p=weights / weights.sum())])] += 1
    return votes


def _fer2013_code(cls: int) -> int:
    name = FERPLUS_CLASSES[cls]
    return FER2013_CLASSES.index("neutral" if name == "contempt" else name)


def generate(out: str | Path, cfg: SynthConfig) -> dict:
    """Write SynthFER to ``out`` (see module docstring); returns the summary written to synthfer.json."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(cfg.seed)
    n_hr = min(cfg.n, 3000) if cfg.n_hr is None else min(cfg.n_hr, cfg.n)
    freqs = class_frequencies(cfg.imbalance)
    classes = rng.choice(8, size=cfg.n, p=freqs)
    usage = rng.choice(["Training", "PublicTest", "PrivateTest"], size=cfg.n, p=list(cfg.split_fractions))
    hr = np.lib.format.open_memmap(out / f".hr_{cfg.hr_size}.npy.tmp", mode="w+", dtype=np.uint8,
                                   shape=(n_hr, cfg.hr_size, cfg.hr_size))
    pix_rows, new_rows, truth_rows = [], [], []
    for i in range(cfg.n):
        irng = np.random.default_rng([cfg.seed, i])
        cls = int(classes[i])
        nonface = irng.uniform() < cfg.p_nonface
        intensity = 0.0 if FERPLUS_CLASSES[cls] == "neutral" else float(irng.uniform(0.45, 1.0))
        if nonface:
            face = _nonface(irng, cfg.hr_size)
        else:
            face = render_face(_expression(FERPLUS_CLASSES[cls], intensity, irng), _identity(irng), cfg.hr_size)
            face = _pose_light(face, irng)
        quality = 1.0
        if irng.uniform() < cfg.p_occlusion:
            face = _occlude(face, irng)
            quality -= 0.4
        if i < n_hr:
            hr[i] = np.asarray(face)
        deg = face
        if irng.uniform() < cfg.p_blur:
            r = irng.uniform(0.5, 2.0) * cfg.hr_size / 96
            deg = deg.filter(ImageFilter.GaussianBlur(r))
            quality -= 0.2 * r / (2.0 * cfg.hr_size / 96)
        lr = np.asarray(deg.resize((cfg.lr_size, cfg.lr_size), Image.BOX), dtype=np.float32)
        lr = np.clip(lr + irng.normal(0, cfg.noise_std, lr.shape), 0, 255).round().astype(np.uint8)
        votes = simulate_votes(cls, intensity, quality, nonface, irng)
        pix_rows.append([_fer2013_code(cls), " ".join(map(str, lr.ravel().tolist())), usage[i]])
        new_rows.append([usage[i], "" if nonface else f"fer{i:07d}.png", *votes.tolist()])
        truth_rows.append([i, FERPLUS_CLASSES[cls], round(intensity, 4), round(quality, 4), int(nonface), usage[i]])
    hr.flush()
    del hr
    import os
    os.replace(out / f".hr_{cfg.hr_size}.npy.tmp", out / f"hr_{cfg.hr_size}.npy")

    def _csv(rows, header):
        def w(p: Path) -> None:
            with p.open("w", newline="") as f:
                wr = csv.writer(f)
                wr.writerow(header)
                wr.writerows(rows)
        return w
    atomic_write(out / "fer2013.csv", _csv(pix_rows, ["emotion", "pixels", "Usage"]))
    atomic_write(out / "fer2013new.csv", _csv(new_rows, ["Usage", "Image name", *FERPLUS_VOTE_COLUMNS]))
    atomic_write(out / "truth.csv", _csv(truth_rows, ["row", "class", "intensity", "quality", "nonface", "usage"]))
    summary = {"dataset": "SynthFER (synthetic, generated by fer-study)", "generator_version": GENERATOR_VERSION,
               "config": asdict(cfg), "n_hr": n_hr, "hr_file": f"hr_{cfg.hr_size}.npy",
               "true_class_counts": {c: int((classes == k).sum()) for k, c in enumerate(FERPLUS_CLASSES)}}
    write_json(out / "synthfer.json", summary)
    return summary


def load_hr(root: str | Path) -> np.ndarray:
    """The clean high-resolution renders (memory-mapped), rows aligned with fer2013.csv."""
    meta = __import__("json").loads((Path(root) / "synthfer.json").read_text())
    return np.load(Path(root) / meta["hr_file"], mmap_mode="r")


def hr_inputs(root: str | Path, sources: list[str], size: int) -> np.ndarray:
    """The true high-resolution renders of the images ``sources`` names (the ``source`` of a
    :class:`~fer_study.data.ferplus.FERSplit` of SynthFER's csv form, ``fer2013new.csv:<line>:...``),
    area-downscaled to ``size``: (N, 1, size, size) uint8, the input of the ``oracle`` setting."""
    import torch
    import torch.nn.functional as F

    from fer_study.errors import DataError

    hr = load_hr(root)
    rows = []
    for src in sources:
        parts = src.split(":")
        if len(parts) < 2 or parts[0] != "fer2013new.csv":
            raise DataError(f"image {src!r} is not a SynthFER csv row: the oracle needs SynthFER's csv form", root)
        rows.append(int(parts[1]) - 2)
    if rows and max(rows) >= len(hr):
        raise DataError(f"only the first {len(hr)} rows have high-resolution renders, row {max(rows)} is needed: "
                        "regenerate SynthFER with n_hr >= n (fer-study data synth --n-hr N)", root)
    x = torch.from_numpy(np.ascontiguousarray(hr[np.asarray(rows, dtype=np.int64)])).float()[:, None]
    if x.shape[-1] != size:
        x = F.interpolate(x, size=(size, size), mode="area") if x.shape[-1] > size else \
            F.interpolate(x, size=(size, size), mode="bicubic", align_corners=False)
    return x.round().clamp(0, 255).to(torch.uint8).numpy()


def write_rafdb_layout(src: str | Path, out: str | Path, test_fraction: float = 0.2, seed: int = 0) -> int:
    """Write SynthFER's high-resolution renders as an official-layout RAF-DB ``basic/`` tree.

    100x100 RGB ``Image/aligned/*_aligned.jpg`` and ``EmoLabel/list_patition_label.txt`` with native
    labels 1..7; contempt images are left out (RAF-DB has no contempt). Returns images written.
    """
    src, out = Path(src), Path(out)
    hr = load_hr(src)
    truth = list(csv.DictReader((src / "truth.csv").open()))
    rng = np.random.default_rng(seed)
    ferplus_to_raf = {f: r for r, f in enumerate(RAFDB_TO_FERPLUS)}
    (out / "Image" / "aligned").mkdir(parents=True, exist_ok=True)
    (out / "EmoLabel").mkdir(parents=True, exist_ok=True)
    lines, counters = [], {"train": 0, "test": 0}
    for i in range(len(hr)):
        t = truth[i]
        k = FERPLUS_CLASSES.index(t["class"])
        if k == 7 or t["nonface"] == "1":
            continue
        split = "test" if rng.uniform() < test_fraction else "train"
        counters[split] += 1
        name = f"{split}_{counters[split]:05d}"
        Image.fromarray(np.asarray(hr[i])).resize((100, 100), Image.BICUBIC).convert("RGB").save(
            out / "Image" / "aligned" / f"{name}_aligned.jpg", quality=95)
        lines.append(f"{name}.jpg {ferplus_to_raf[k] + 1}")
    (out / "EmoLabel" / "list_patition_label.txt").write_text("\n".join(lines) + "\n")
    write_json(out / "synthfer.json", {"synthetic": True, "layout": "rafdb", "source": str(src), "seed": seed,
                                       "images": len(lines)})
    return len(lines)


def is_synthetic(root: str | Path) -> bool:
    """Whether a data root holds SynthFER (in any layout): it carries the generator's ``synthfer.json``."""
    return (Path(root) / "synthfer.json").is_file()


def ensure(root: str | Path, n: int = 3000, seed: int = 0, hr_size: int = 192, imbalance: float = 1.0,
           n_hr: int | None = None, split_fractions: tuple[float, float, float] = DEMO_SPLIT) -> Path:
    """Generate SynthFER at ``root`` unless a copy with the same settings is already there (default:
    the demo's test-heavy split, :data:`DEMO_SPLIT`)."""
    import json

    root = Path(root)
    want = SynthConfig(n=n, seed=seed, hr_size=hr_size, imbalance=imbalance, n_hr=n_hr,
                       split_fractions=tuple(split_fractions))
    meta = root / "synthfer.json"
    if meta.exists():
        have = json.loads(meta.read_text())["config"]
        have["split_fractions"] = tuple(have.get("split_fractions", ()))
        if have == asdict(want) and json.loads(meta.read_text()).get("generator_version") == GENERATOR_VERSION:
            return root
    generate(root, want)
    return root
