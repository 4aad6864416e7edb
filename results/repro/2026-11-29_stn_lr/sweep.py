"""Stall sweep: the demo's Swin-B/L + STN cells, stn_lr_scale 1 vs 0.1, on one float path (THREADS intra-op
threads in one process). usage: sweep.py THREADS OUT_CSV SEEDS... ; resumable (rows in OUT_CSV are skipped,
finished runs reused)."""
import os, sys
threads = int(sys.argv[1]); os.environ["OMP_NUM_THREADS"] = str(threads)
import csv, json
import numpy as np, pandas as pd, torch
torch.set_num_threads(threads)
from fer_study.tables import tables_for, cell_config
from fer_study.training import train
from fer_study.models import NeuralResizerClassifier
from fer_study.training.data import load_splits, model_inputs
out = sys.argv[2]; seeds = [int(s) for s in sys.argv[3:]]
scales = os.environ.get("SCALES", "0.1 1.0").split()
cells = [c for t in tables_for("table3", "demo") for c in t.cells if c.key.endswith("Proposed")]
cells += [c for t in tables_for("table4", "demo") for c in t.cells if c.key == "ours|RAF-DB"]
only = os.environ.get("CELLS")
if only:
    cells = [c for c in cells if c.key in only.split(",")]
done = set()
if os.path.exists(out):
    done = {(r["cell"], r["stn_lr_scale"], int(r["seed"])) for r in csv.DictReader(open(out))}
new = not os.path.exists(out)
f = open(out, "a", newline=""); w = csv.writer(f)
if new:
    w.writerow(["cell", "stn_lr_scale", "seed", "threads", "run_id", "clean_test_acc", "majority_share",
                "theta_drift", "train_seconds"]); f.flush()
_test = {}
def drift(cfg, d):
    key = cfg.dataset
    if key not in _test:
        sp = load_splits(cfg)
        _test[key] = model_inputs(cfg, {"test": sp["test"]}, torch.device("cpu"), progress=False)["test"]
    data = _test[key]
    x = torch.as_tensor(np.asarray(data.images[:256])).float()
    if x.max() > 2: x = x / 255
    if x.shape[1] == 1: x = x.expand(-1, 3, -1, -1)
    m = NeuralResizerClassifier(cfg.model)
    m.load_state_dict(torch.load(d / "model_best.pt", map_location="cpu"), strict=False); m.eval()
    with torch.no_grad():
        xn = m.normalise(x) if cfg.model.normalise == "input" else x
        th = m.stn.theta(xn)
    ident = torch.tensor([[1.0, 0, 0], [0, 1.0, 0]])
    return float((th - ident).abs().mean())
for seed in seeds:
    for cell in cells:
        for sc in scales:
            if (cell.key, sc, seed) in done:
                continue
            cfg = cell_config(cell, "demo", seed, [f"stn_lr_scale={sc}", f"runs_dir=/tmp/sw/runs_t{threads}", "progress=false"])
            d = train(cfg)
            m = json.load(open(d / "metrics.json"))
            acc = m["protocols"]["clean"]["test_acc"]
            p = pd.read_csv(d / "predictions.csv")
            share = round(float(p["pred"].value_counts(normalize=True).iloc[0]), 4)
            th = round(drift(cfg, d), 4)
            w.writerow([cell.key, sc, seed, threads, d.name, round(100 * acc, 2), share, th, m.get("train_seconds")]); f.flush()
            print(cell.key, sc, seed, round(100 * acc, 2), share, th, flush=True)
