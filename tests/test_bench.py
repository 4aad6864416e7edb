"""``fer-study bench`` on a tiny configuration: it runs here, writes its JSON/MD, and leaves partial
results when a later part fails. Speed itself is never asserted (benchmarks measure it)."""

from __future__ import annotations

import json

import pytest
import torch

from fer_study import bench
from fer_study.bench import BenchConfig, ratios, run_bench


def _tiny(**over) -> BenchConfig:
    base = dict(backbone="tiny_vit", batch=2, sr_size=64, input_size=8, warmup=1, steps=3, stem="conv", ltr_n=4,
                baseline_images=6, sr_backends=("bicubic", "dic"), sr_images=2, sr_batch=2)
    base.update(over)
    return BenchConfig(**base)


def test_bench_runs_and_writes_results(tmp_path):
    res = run_bench(_tiny(), torch.device("cpu"), tmp_path, log=lambda *_: None)
    files = sorted(p.name for p in tmp_path.iterdir())
    assert len(files) == 2 and files[0].endswith(".json") and files[1].endswith(".md")
    saved = json.loads((tmp_path / files[0]).read_text())
    assert saved["complete"] is True and saved["ratios"] == res["ratios"]
    r = saved["results"]
    for k in ("vanilla_eager", "nr_eager"):
        assert len(r[k]["all_steps_s"]) == 3 and r[k]["images_per_s"] > 0 and r[k]["compile_mode"] == "eager"
    assert r["sr_dic"]["fp32"]["images_per_s"] > 0 and "bf16" not in r["sr_dic"]  # bf16 timed on CUDA only
    assert r["authors_baseline"]["images_timed"] == 10  # 2 epochs x 3 batches of 2; the first is not timed
    assert saved["ratios"]["nr_over_vanilla_step_time_eager"] == pytest.approx(
        r["nr_eager"]["median_step_s"] / r["vanilla_eager"]["median_step_s"], rel=1e-3)
    assert "INCOMPLETE" not in (tmp_path / files[1]).read_text()
    run_bench(_tiny(sr_backends=(), baseline=False), torch.device("cpu"), tmp_path, log=lambda *_: None)
    assert {p.name for p in tmp_path.glob("*.json")} == {files[0], files[0].replace(".json", "-2.json")}


def test_bench_keeps_partial_results_when_a_part_fails(tmp_path, monkeypatch):
    def boom(*_a, **_k):
        raise RuntimeError("baseline failed")

    monkeypatch.setattr(bench, "authors_baseline", boom)
    with pytest.raises(RuntimeError, match="baseline failed"):
        run_bench(_tiny(sr_backends=("bicubic",)), torch.device("cpu"), tmp_path, log=lambda *_: None)
    saved = json.loads(next(tmp_path.glob("*.json")).read_text())
    assert saved["complete"] is False and {"vanilla_eager", "nr_eager", "sr_bicubic"} <= set(saved["results"])
    assert "INCOMPLETE" in next(tmp_path.glob("*.md")).read_text()


def test_ratios_from_partial_and_compiled_results():
    r = {"vanilla_eager": {"median_step_s": 2.0, "images_per_s": 4.0, "all_steps_s": [2.0, 4.0, 2.0]},
         "nr_eager": {"median_step_s": 2.5, "images_per_s": 3.2, "all_steps_s": [2.2, 4.4, 3.0]},
         "vanilla_compiled_default": {"median_step_s": 1.0, "images_per_s": 8.0},
         "nr_compiled_default": {"median_step_s": 1.25, "images_per_s": 6.4},
         "data_path_sr": {"median_batch_s": 0.05}, "authors_baseline": {"images_per_s": 1.6}}
    q = ratios(r)
    assert q["nr_over_vanilla_step_time_eager"] == 1.25 and q["data_path_fraction_of_nr_step"] == 0.02
    assert q["nr_over_vanilla_paired_median_eager"] == 1.1  # median of 1.1, 1.1, 1.5
    assert q["compile_speedup_nr_default"] == 2.0 and q["nr_over_vanilla_step_time_compiled_default"] == 1.25
    assert q["best_nr_images_per_s"] == 6.4 and q["ours_best_nr_over_authors_baseline"] == 4.0
    assert ratios({"nr_eager": r["nr_eager"]}) == {"best_nr_images_per_s": 3.2}


def test_bench_times_the_engines_training_step(tmp_path, monkeypatch):
    """The bench's step is fer_study.training.step.train_step, the function the epoch loop runs, on
    the run's loss, optimiser and augmentation (paper profile: F-PDLS + PSR prior, Adam, authors')."""
    from fer_study.losses import FPDLS
    from fer_study.training import loop, step

    assert loop.train_step is step.train_step  # the epoch loop's step
    calls = []
    real = step.train_step

    def counting(parts, *a, **k):
        calls.append(parts)
        return real(parts, *a, **k)

    monkeypatch.setattr(step, "train_step", counting)
    bc = _tiny(sr_backends=(), baseline=False)
    run = bench.make_train_step(bench.pipeline_models(bc)["nr"], bc.sr_size, bc, torch.device("cpu"), None)
    run()
    run()
    assert len(calls) == 2
    parts = calls[0]
    assert isinstance(parts.loss_fn, FPDLS) and parts.loss_fn.prior is not None
    assert type(parts.optimizer) is torch.optim.Adam and parts.augment == bench.AUGMENTS["authors"]
    res = run_bench(bc, torch.device("cpu"), tmp_path, log=lambda *_: None)
    ts = res["train_step"]
    assert ts["function"] == "fer_study.training.step.train_step"
    assert (ts["loss"], ts["prior"], ts["optimizer"], ts["augment"]) == ("fpdls", "psr", "adam", "authors")
    assert len(calls) == 2 + 2 * (bc.warmup + bc.steps * bc.block)  # every timed and warm-up step
    ts2 = bench.timed_step_record(_tiny(overrides=("loss=ce", "optimizer=adamw", "augment=none")))
    assert (ts2["loss"], ts2["optimizer"], ts2["augment"]) == ("ce", "adamw", "none")
