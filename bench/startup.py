"""Start-up cost: `graft --help` wall time, and the import time of graft's modules.

    .venv/bin/python bench/startup.py [--repeat 10]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

BIN = Path(sys.executable).parent


def wall(cmd: list[str], repeat: int) -> list[float]:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        subprocess.run(cmd, check=True, capture_output=True)
        times.append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=10)
    args = parser.parse_args()
    rows = [
        ("graft --help", [str(BIN / "graft"), "--help"]),
        ("python -c 'import graft.cli'", [sys.executable, "-c", "import graft.cli"]),
        ("python -c 'import graft.config' (pydantic)", [sys.executable, "-c", "import graft.config"]),
        ("python -c 'import torch'", [sys.executable, "-c", "import torch"]),
        ("python -c 'import prefect'", [sys.executable, "-c", "import prefect"]),
        ("python -c 'import mlflow'", [sys.executable, "-c", "import mlflow"]),
        ("python -c 'import dvc.repo'", [sys.executable, "-c", "import dvc.repo"]),
    ]
    print(f"{'command':<46}{'median s':>10}{'min s':>8}")
    for label, cmd in rows:
        t = wall(cmd, args.repeat)
        print(f"{label:<46}{statistics.median(t):>10.3f}{min(t):>8.3f}")


if __name__ == "__main__":
    main()
