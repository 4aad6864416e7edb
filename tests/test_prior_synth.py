from __future__ import annotations

import hashlib

import numpy as np

from fer_study.classes import RAFDB_TO_FERPLUS
from fer_study.data.ferplus import load_ferplus
from fer_study.data.prior import PSR_FERPLUS_PRIOR, prior_from_votes, rafdb_prior
from fer_study.data.synth import SynthConfig, class_frequencies, generate, simulate_votes


def test_psr_constant_verbatim_rows():
    assert PSR_FERPLUS_PRIOR.shape == (8, 8)
    assert PSR_FERPLUS_PRIOR[0, 0] == 0.777334 and PSR_FERPLUS_PRIOR[7, 7] == 0.678099
    np.testing.assert_allclose(PSR_FERPLUS_PRIOR.sum(1), 1.0, atol=2e-6)


def test_prior_from_votes_hand_computed():
    votes = np.array([[8, 2, 0, 0, 0, 0, 0, 0, 0, 0], [6, 0, 0, 2, 0, 0, 0, 0, 2, 0], [0, 10, 0, 0, 0, 0, 0, 0, 0, 0]])
    p = prior_from_votes(votes, np.array([0, 0, 1]), 8)
    np.testing.assert_allclose(p[0], [(0.8 + 0.75) / 2, 0.1, 0, 0.125, 0, 0, 0, 0])
    np.testing.assert_allclose(p[1], np.eye(8)[1])
    np.testing.assert_allclose(p[5], np.eye(8)[5])  # no images: one-hot


def test_rafdb_reindex_and_renormalise():
    p = rafdb_prior()
    for r, fr in enumerate(RAFDB_TO_FERPLUS):
        for c, fc in enumerate(RAFDB_TO_FERPLUS):
            assert p[r, c] == PSR_FERPLUS_PRIOR[fr, fc]
    assert (p.sum(1) < 1).all()
    np.testing.assert_allclose(rafdb_prior(renormalise=True).sum(1), 1.0)


def test_real_ferplus_prior_close_to_psr(ferplus_root):
    s = load_ferplus(ferplus_root, "train", load_images=False)
    assert np.abs(prior_from_votes(s.votes, s.label) - PSR_FERPLUS_PRIOR).max() < 0.03


def test_synth_is_deterministic(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    for d in (a, b):
        generate(d, SynthConfig(n=60, seed=9, hr_size=96))
    for f in ("fer2013.csv", "fer2013new.csv", "hr_96.npy"):
        assert hashlib.sha256((a / f).read_bytes()).digest() == hashlib.sha256((b / f).read_bytes()).digest()
    generate(b, SynthConfig(n=60, seed=10, hr_size=96))
    assert (a / "fer2013.csv").read_bytes() != (b / "fer2013.csv").read_bytes()


def test_synth_imbalance_and_votes(synth_root):
    f = class_frequencies(1.0)
    assert f.argmax() == 0 and f[5] < 0.01  # neutral most, disgust rare, like FERPlus
    rng = np.random.default_rng(0)
    v = np.stack([simulate_votes(6, 0.5, 1.0, False, rng) for _ in range(400)])
    assert (v.sum(1) == 10).all()
    assert v[:, 2].sum() > v[:, [1, 3, 4, 5, 7]].sum(0).max()  # fear is confused with surprise most
    nf = simulate_votes(0, 0.0, 1.0, True, rng)
    assert nf.argmax() == 9
    s = load_ferplus(synth_root, "train")
    hr = np.load(synth_root / "hr_96.npy", mmap_mode="r")
    assert hr.shape[1:] == (96, 96)
    assert len(np.unique(s.label)) >= 6


def test_oracle_inputs_are_the_renders_of_the_same_rows(synth_root):
    """sr_backend=oracle feeds each image's own high-resolution render: area-downscaled to 48 px it
    matches the 48 px image up to the generator's noise (std 4) and blur; another row's does not."""
    from fer_study.data.ferplus import load_ferplus
    from fer_study.data.synth import hr_inputs

    sp = load_ferplus(synth_root, "test")
    hr48 = hr_inputs(synth_root, sp.source, 48)[:, 0].astype(np.float64)
    lr = sp.images.astype(np.float64)
    own = np.abs(hr48 - lr).mean(axis=(1, 2))
    other = np.abs(hr48 - np.roll(lr, 1, axis=0)).mean(axis=(1, 2))
    assert hr_inputs(synth_root, sp.source[:3], 96).shape == (3, 1, 96, 96)
    # generator 3 keeps identity nuisance small (skin 170-180, background 35-45): other faces differ by
    # about 15 grey levels in the median, the same face by about 3 (blur and noise)
    assert np.median(own) < 5 and np.median(other) > 3 * np.median(own), (np.median(own), np.median(other))
