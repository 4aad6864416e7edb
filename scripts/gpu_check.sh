#!/usr/bin/env bash
# Prepared GPU check (issues 6, 16). Needs a CUDA machine with PyTorch and timm (numpy, pandas, pillow,
# tqdm, pytest); no network, no install: the package is used from this checkout (PYTHONPATH).
# 0. the paper path end to end (scripts/paper_path_check.py): Table 2 (e) with DIC x8 (random
#    weights), STN, LTR, a random-init Swin-B, bf16, torch.compile, 400 SynthFER images, 2 epochs;
#    the run directory under OUT/paper/runs and Table 2 rendered from it (OUT/paper/tables);
# 1. the CUDA tests (tests/test_gpu.py) and the augmentation tests;
# 2. `fer-study bench` on the issue's configuration: swin_s, batch 64, 48 -> 384 (SR cached) -> 224,
#    vanilla vs Neural Resizer interleaved, eager then torch.compile (default, reduce-overhead),
#    the on-device data path, SR cache build (bicubic; DIC fp32 and bf16), the authors'-style baseline.
# The bench rewrites its JSON after every part, so a time limit still leaves what was measured.
# Budget: under 8 minutes. Usage: bash scripts/gpu_check.sh OUTDIR   (FER_STUDY_GIT_SHA: the commit,
# for a copy of the tree without .git; PAPER_TIMEOUT / BENCH_TIMEOUT: seconds for parts 0 and 2,
# default 180 / 200: with the tests, under 8 minutes)
set -uo pipefail
OUT=${1:?usage: gpu_check.sh OUTDIR}
mkdir -p "$OUT"
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
PY=${PYTHON:-python3}
t0=$(date +%s)
{
  nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv
  $PY -c "import sys, torch, timm, numpy; print('python', sys.version.split()[0], 'torch', torch.__version__, 'cuda', torch.version.cuda, 'timm', timm.__version__, 'numpy', numpy.__version__, 'gpu', torch.cuda.get_device_name(0))"
  nproc
} 2>&1 | tee "$OUT/gpu.txt"
timeout "${PAPER_TIMEOUT:-180}" $PY scripts/paper_path_check.py "$OUT/paper" --device cuda 2>&1 | tail -40 \
  | tee "$OUT/paper_log.txt"
echo "paper path done at +$(( $(date +%s) - t0 )) s"
timeout 90 $PY -m pytest -q -p no:cacheprovider tests/test_gpu.py tests/test_tensors.py 2>&1 | tail -15 | tee "$OUT/tests.txt"
echo "tests done at +$(( $(date +%s) - t0 )) s"
timeout "${BENCH_TIMEOUT:-200}" $PY -m fer_study.cli bench --device cuda --backbone swin_s --batch 64 --sr-size 384 \
  --warmup 3 --steps 10 --block 5 --compile-modes default reduce-overhead --sr-backends bicubic dic \
  --sr-images 256 --sr-batch 32 --baseline-images 512 --out "$OUT" 2>&1 | tee "$OUT/bench_log.txt" | tail -40
echo "gpu_check done at +$(( $(date +%s) - t0 )) s: $(ls "$OUT")"
