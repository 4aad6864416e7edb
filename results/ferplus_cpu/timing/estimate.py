"""How long `make ferplus-cpu` takes on an otherwise idle 2-core machine, from measured pieces.

The grid itself was run once (2026-11-29) while the same two cores ran test suites, and took
3 h 23 min of wall time. To know what it costs alone, each of its five settings was run for
2 epochs with nothing else on the machine, the way the grid runs them (two single-thread workers,
the longest first):

    fer-study run table2 --profile ferplus-cpu --seeds 0 --executor workers --jobs 2 \
        --set ferplus_root=../shared/data/ferplus --set epochs=2 --set runs_dir=/tmp/ftime/runs

(records in runs/, log in grid_2epochs.log). A 12-epoch run is taken as 6 x its 2-epoch wall
time: every epoch costs the same (same images, same model; the schedule does not change the
cost), so this counts the start-up and the final test pass six times instead of once and is an
upper bound. The 15 runs (3 seeds) are then packed on two workers longest first, as
`runner.longest_first` does. The other steps of `make ferplus-cpu` were timed alone too
(steps.txt). Run: python results/ferplus_cpu/timing/estimate.py
"""

from __future__ import annotations

import math
import re
from pathlib import Path

HERE = Path(__file__).parent
SETTINGS = {"swin_b-sr-ltr-stn": "e", "swin_s-sr-ltr": "d", "swin_s-bilinear-ltr": "b",
            "swin_s-sr-bilinear": "c", "swin_s-bilinear-none": "a"}


def two_epoch_walls() -> dict[str, float]:
    """Setting letter -> wall seconds of its 2-epoch run (grid_2epochs.log's 'done in' lines)."""
    out = {}
    for line in (HERE / "grid_2epochs.log").read_text().splitlines():
        m = re.search(r"done in (\d+) s ferplus-cpu_(\S+)-fpdls-s0", line)
        if m:
            out[SETTINGS[m.group(2)]] = float(m.group(1))
    return out


def steps() -> dict[str, float]:
    """Step name -> wall seconds (steps.txt)."""
    return {line.split()[0]: float(line.split()[1].split("=")[1])
            for line in (HERE / "steps.txt").read_text().splitlines() if line.strip()}


def pack(costs: list[float], workers: int = 2) -> float:
    """Wall time of running ``costs`` on ``workers`` workers, longest first, each taking the next."""
    free = [0.0] * workers
    for c in sorted(costs, reverse=True):
        i = free.index(min(free))
        free[i] += c
    return max(free)


def main() -> None:
    walls = two_epoch_walls()
    runs12 = {k: 6 * v for k, v in walls.items()}
    grid = pack([c for c in runs12.values() for _ in range(3)])
    other = steps()
    total = grid + sum(other.values())
    for k in sorted(runs12):
        print(f"({k}) 2 epochs {walls[k]:.0f} s -> 12 epochs <= {runs12[k] / 60:.1f} min per run")
    print(f"grid (15 runs, 2 workers, longest first) <= {grid / 60:.1f} min")
    for k, v in other.items():
        print(f"{k}: {v / 60:.1f} min")
    up = math.ceil(total / 60)  # whole minutes, rounded up: an upper bound stays one
    print(f"make ferplus-cpu from nothing (facesr, SR eval, SR cache, grid, report) <= {total / 60:.1f} min "
          f"<= {up // 60} h {up % 60} min")


if __name__ == "__main__":
    main()
