#!/usr/bin/env bash
# Prepared GPU check (issue 6): needs a CUDA machine with PyTorch, timm and this package's deps;
# no network. Runs the CUDA tests, then the benchmark (swin_s, batch 64, 48 -> 384 -> 224, SR cached,
# eager and torch.compile, authors'-style baseline, DIC cache-build speed). Writes JSON/MD into $1.
# Budget: under 8 minutes. Usage: bash scripts/gpu_check.sh OUTDIR
set -uo pipefail
OUT=${1:?usage: gpu_check.sh OUTDIR}
mkdir -p "$OUT"
export HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}
cd "$(dirname "$0")/.."
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
timeout 150 $PY -m pytest -q tests/test_gpu.py tests/test_losses.py tests/test_models.py -x 2>&1 | tail -5 | tee "$OUT/tests.txt"
timeout 300 $PY -m fer_study.cli bench --device cuda --backbone swin_s --batch 64 --sr-size 384 --steps 20 \
  --warmup 5 --compile --sr-backends bicubic dic --sr-images 64 --baseline-images 512 --out "$OUT" 2>&1 | tail -30
echo "gpu_check done: $(ls "$OUT")"
