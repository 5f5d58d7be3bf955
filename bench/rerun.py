"""Rerun cost when there is little or nothing to do: `graft run` and `dvc repro` against `dvc status`.

    .venv/bin/python bench/rerun.py [--repeat 5]

Run it in a repository where `graft run` has completed (e.g. after `make run`). It measures:
nothing stale (graft run, dvc repro, dvc status), and only `evaluate` stale (forced by touching
its params), through both drivers. It restores params.yaml afterwards.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

BIN = Path(sys.executable).parent


def timed(cmd: list[str]) -> float:
    start = time.perf_counter()
    proc = subprocess.run(cmd, check=False, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed:\n{proc.stdout}\n{proc.stderr}")
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    graft, dvc = str(BIN / "graft"), str(BIN / "dvc")
    if "up to date" not in subprocess.run([dvc, "status"], check=False, capture_output=True, text=True).stdout:
        sys.exit("run `graft run` first: this measures reruns of a completed pipeline")

    rows = []
    for label, cmd in (("dvc status", [dvc, "status"]), ("graft run (nothing stale)", [graft, "run"]),
                       ("dvc repro (nothing stale)", [dvc, "repro"])):
        rows.append((label, [timed(cmd) for _ in range(args.repeat)]))

    params = Path("params.yaml")
    original = params.read_text()
    try:
        for label, driver in (("graft run (evaluate stale)", [graft, "run"]), ("dvc repro (evaluate stale)", [dvc, "repro"])):
            times = []
            for i in range(args.repeat):
                bins = 10 + (i % 2)  # alternate so that evaluate is stale every time
                params.write_text(original.replace("calibration_bins: 15", f"calibration_bins: {bins}"))
                times.append(timed(driver))
            rows.append((label, times))
    finally:
        params.write_text(original)
        subprocess.run([graft, "run"], check=False, capture_output=True)  # back to the committed state

    print(f"{'command':<32}{'median s':>10}{'min s':>8}")
    for label, t in rows:
        print(f"{label:<32}{statistics.median(t):>10.3f}{min(t):>8.3f}")


if __name__ == "__main__":
    main()
