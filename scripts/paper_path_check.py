"""The whole paper path, trained end to end on one device (part of scripts/gpu_check.sh, issue 16).

Table 2's setting (e), the paper's full configuration, with the real architectures: DIC x8
(48 -> 384, random weights written here, since the released checkpoint cannot be fetched offline),
STN, learn-to-resize n=16 to 224, a randomly initialised Swin-B, F-PDLS, the authors' augmentation,
bf16 autocast and ``torch.compile``; a few hundred SynthFER images (FERPlus csv form), 2 epochs.
It writes the run directory, renders Table 2 from it through the report, and records timings, peak
memory and the device in ``OUT/paper_path.json``. Nothing is downloaded.

    python scripts/paper_path_check.py OUT [--device cuda] [--images 400] [--epochs 2] [--no-compile]
    python scripts/paper_path_check.py OUT --device cpu --images 48 --epochs 1 --no-compile --tiny  # CPU smoke

``--tiny`` swaps Swin-B for its CPU stand-in (the DIC, STN and LTR stay the paper's): a CPU check of
the script itself, not of the paper path.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--images", type=int, default=400, help="SynthFER images (split 80/10/10)")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--no-compile", action="store_true")
    ap.add_argument("--tiny", action="store_true", help="CPU smoke: tiny_swin_b instead of Swin-B")
    ap.add_argument("--sr-batch", type=int, default=32, help="images per DIC batch of the SR cache build "
                    "(DIC x8 at batch 32 needs more than 24 GB of host memory on a CPU)")
    a = ap.parse_args(argv)

    import functools

    import torch

    import fer_study.sr_cache as sr_cache
    from fer_study.data.synth import SynthConfig, generate
    from fer_study.io import environment, write_json
    from fer_study.models.dic import DIC
    from fer_study.report import build_table, export
    from fer_study.runs import Run
    from fer_study.tables import TABLES, cell_config
    from fer_study.training import train

    sr_cache.build_sr_cache = functools.partial(sr_cache.build_sr_cache, batch_size=a.sr_batch)
    out = Path(a.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    data = out / "synthfer"
    generate(data, SynthConfig(n=a.images, seed=0, hr_size=96, n_hr=0, split_fractions=(0.8, 0.1, 0.1)))
    torch.manual_seed(0)
    dic = out / "dic_random.pth"
    torch.save({"state_dict": DIC().state_dict()}, dic)  # the released checkpoint's layout, random weights
    overrides = [f"ferplus_root={data}", f"sr_weights={dic}", "model.pretrained=false", f"epochs={a.epochs}",
                 f"batch_size={a.batch}", f"compile={str(not a.no_compile).lower()}", "amp=true",
                 f"device={a.device}", f"runs_dir={out / 'runs'}", f"cache_dir={out / 'cache'}", "progress=false"]
    if a.tiny:
        overrides += ["model.backbone=tiny_swin_b", "model.img_size=48", "model.stem=conv"]
    cfg = cell_config(TABLES["table2"].cell("e"), "paper", 0, overrides)
    t_setup = time.perf_counter() - t0
    if cfg.device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    t1 = time.perf_counter()
    run = Run(train(cfg))
    t_train = time.perf_counter() - t1
    m = run.metrics()
    df, notes = build_table("table2", "paper", [0], overrides)  # the report finds the run from the overrides
    table = [str(p) for p in export(df, notes, "table2", out / "tables", publish=True)]
    res = {
        "what": "Table 2 (e) on the paper profile: DIC x8 (random weights) -> STN -> LTR n=16 -> "
                f"{cfg.model.backbone} (random init), F-PDLS, authors' augmentation, bf16 autocast, "
                f"compile={cfg.compile}; SynthFER {a.images} images, {a.epochs} epochs",
        "device": environment(cfg.device)["device"], "run_id": run.run_id, "run_dir": str(run.path),
        "setup_seconds": round(t_setup, 1), "train_call_seconds": round(t_train, 1),
        "train_seconds": m["train_seconds"], "images_per_s_mean": m["images_per_s_mean"],
        "test_acc_clean": m["protocols"]["clean"]["test_acc"], "n": m["n"],
        "peak_memory_gib": round(torch.cuda.max_memory_allocated() / 2 ** 30, 2) if cfg.device.startswith("cuda")
        else None,
        "table2": table, "history": run.history(),
    }
    write_json(out / "paper_path.json", res)
    print(json.dumps({k: v for k, v in res.items() if k != "history"}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
