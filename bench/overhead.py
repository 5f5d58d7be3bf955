"""What the pipeline costs over a hand-written training loop, on the same machine in one run.

    .venv/bin/python bench/overhead.py [PARAMS_YAML] [--scale 0.05] [--keep]

PARAMS_YAML defaults to bench/overhead_params.yaml, sized so that the hand-written script takes about
10 minutes on 2 CPU cores. `--scale` multiplies its epochs (for a quick try; fixed costs then weigh more).

1. Clones this repository's HEAD into a temporary folder (a fresh clone: no outputs, no DVC cache, a
   new MLflow store) and writes PARAMS_YAML there as params.yaml.
2. Times `graft run` there: ingest … register, Prefect, DVC and MLflow included.
3. Times bench/handwritten.py on the data that run prepared: the same pretraining, linear probe and
   from-scratch baseline (same model, epochs, batch size, rates, seed), with nothing around it.
4. Prints both wall times, their ratio, and the fixed costs item by item: what happened outside the
   stages (interpreter start-up and imports, Prefect's temporary server, DVC and MLflow calls),
   the stages that have no hand-written counterpart, and inside each training stage what is not
   training steps (per-epoch validation, checkpoints, per-epoch tracking, loading and saving).
"""

from __future__ import annotations

import argparse
import csv
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
TRAINING = ("pretrain", "finetune", "baseline")


def timed(cmd: list[str], cwd: Path) -> tuple[float, str]:
    start = time.perf_counter()
    proc = subprocess.run(cmd, check=False, cwd=cwd, capture_output=True, text=True,
                          env={**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"})
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return seconds, proc.stdout + proc.stderr


def fresh_clone(params: dict, scale: float) -> Path:
    ws = Path(tempfile.mkdtemp(prefix="graft-overhead-")) / "ws"
    subprocess.run(["git", "clone", "-q", str(REPO), str(ws)], check=True)
    for section in TRAINING[:2]:
        params[section]["epochs"] = max(1, round(params[section]["epochs"] * scale))
    (ws / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return ws


def stage_seconds(output: str) -> dict[str, float]:
    """The `stage  ran  12.3s` rows of graft run's summary."""
    return {m[1]: float(m[2]) for m in re.finditer(r"^(\w+)\s+ran\s+([\d.]+)s$", output, re.MULTILINE)}


def training_steps(ws: Path, stage: str) -> tuple[float, float]:
    """Seconds spent in training steps, and at the fastest epoch's rate (from the per-epoch history)."""
    train_count = _train_count(ws, stage)
    with open(ws / "plots" / f"{stage}.csv") as f:
        rates = [float(row["images_per_sec"]) for row in csv.DictReader(f)]
    return sum(train_count / r for r in rates), len(rates) * train_count / max(rates)


def _train_count(ws: Path, stage: str) -> int:
    domain = "source" if stage == "pretrain" else "target"
    return yaml.safe_load((ws / "data/prepared" / domain / "manifest.json").read_text())["counts"]["train"]


def import_seconds(module: str, repeat: int = 3) -> float:
    return min(timed([sys.executable, "-c", f"import {module}"], REPO)[0] for _ in range(repeat))


def prefect_server_seconds() -> float:
    """Starting Prefect's temporary API server for one empty flow, over importing Prefect."""
    run = "from prefect import flow\n@flow\ndef empty():\n    pass\nempty()"
    return timed([sys.executable, "-c", run], REPO)[0] - import_seconds("prefect", 1)


def checkpoint_and_validation_seconds(ws: Path, params: dict) -> tuple[float, float]:
    """One pretraining checkpoint write and one validation pass, as graft's loop does them each epoch."""
    sys.path.insert(0, str(ws))

    from graft.config import validate_params
    from graft.data.store import load_domain
    from graft.models.io import architecture_of, build_classifier
    from graft.paths import Paths
    from graft.training.checkpoint import Checkpoint
    from graft.training.device import placement_for
    from graft.training.loop import evaluate
    from graft.training.runtime import setup_torch
    from graft.training.strategies import make_optimizer

    p = validate_params(params)
    device = setup_torch(p)
    data, manifest = load_domain(Paths.at(ws), "source")
    model = build_classifier(architecture_of(p), len(manifest["classes"]))
    place = placement_for(model, device)
    place.place(model)
    optimizer = make_optimizer(model, "adamw", 5e-4, 0.9)
    model(place.batch(data["train"].images[:8])).sum().backward()
    optimizer.step()
    checkpoint = Checkpoint(Path(tempfile.mkdtemp(prefix="graft-ckpt-")), "bench", "pretrain")
    saves, evals = [], []
    for _ in range(5):
        start = time.perf_counter()
        checkpoint.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "epoch": 1})
        saves.append(time.perf_counter() - start)
        start = time.perf_counter()
        evaluate(model, data["val"], p.train.eval_batch_size, place)
        evals.append(time.perf_counter() - start)
    shutil.rmtree(checkpoint.folder)
    return statistics.median(saves), statistics.median(evals)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("params", nargs="?", default=str(REPO / "bench/overhead_params.yaml"))
    parser.add_argument("--scale", type=float, default=1.0, help="multiply pretrain and finetune epochs")
    parser.add_argument("--keep", action="store_true", help="keep the temporary clone")
    args = parser.parse_args()
    params = yaml.safe_load(Path(args.params).read_text())
    ws = fresh_clone(params, args.scale)
    print(f"workspace {ws} (a clone of {REPO} at HEAD); pretrain {params['pretrain']['epochs']} epochs, "
          f"finetune and baseline {params['finetune']['epochs']} epochs, batch {params['train']['batch_size']}, "
          f"{params['train']['threads']} threads")

    graft_s, graft_out = timed([sys.executable, "-m", "graft.cli", "run"], ws)
    stages = stage_seconds(graft_out)
    hand_s, hand_out = timed([sys.executable, str(REPO / "bench/handwritten.py"), "params.yaml", "data/prepared"], ws)
    hand = {m[1]: (float(m[2]), float(m[3]), float(m[4])) for m in re.finditer(
        r"^(\w+)\s+([\d.]+) s\s+steps\s+([\d.]+) s\s+fastest epoch\s+([\d.]+) img/s", hand_out, re.MULTILINE)}

    print(f"\ngraft run                  {graft_s:8.1f} s")
    print(f"hand-written script        {hand_s:8.1f} s")
    print(f"ratio                      {graft_s / hand_s:8.3f}")
    print("\nhand-written output:\n" + hand_out.strip())
    table = re.search(r"^stage\s+status.*?(?=\n\n|\Z)", graft_out, re.MULTILINE | re.DOTALL)
    print("\ngraft run summary:\n" + (table[0] if table else graft_out[-2000:]))

    print("\nwhere graft's extra time goes (s)")
    outside = graft_s - sum(stages.values())
    print(f"  outside the stages (start-up, imports, Prefect server, DVC, MLflow parent run)  {outside:7.1f}")
    other = {name: s for name, s in stages.items() if name not in TRAINING}
    print(f"  stages with no hand-written part ({', '.join(other)})  {sum(other.values()):7.1f}")
    ckpt, val = checkpoint_and_validation_seconds(ws, yaml.safe_load((ws / "params.yaml").read_text()))
    graft_excess = hand_excess = 0.0  # time lost to other work, in the training steps
    for stage in TRAINING:
        steps, steps_at_best = training_steps(ws, stage)
        part, hand_steps, hand_best = hand.get(stage, (0.0, 0.0, 1.0))
        count = _train_count(ws, stage)
        epochs = params["pretrain" if stage == "pretrain" else "finetune"]["epochs"]
        graft_excess += steps - steps_at_best
        hand_excess += hand_steps - epochs * count / hand_best
        print(f"  {stage:<9} graft {stages.get(stage, 0):7.1f} (training steps {steps:7.1f}, fastest epoch "
              f"{count * epochs / steps_at_best:6.0f} img/s);  hand-written {part:7.1f} (steps {hand_steps:7.1f}, "
              f"fastest epoch {hand_best:6.0f} img/s)")
    epochs = params["pretrain"]["epochs"]
    print(f"  per pretraining epoch: checkpoint write {1000 * ckpt:.1f} ms, validation pass {1000 * val:.0f} ms "
          f"(x {epochs} epochs = {epochs * (ckpt + val):.1f} s)")

    filtered_graft, filtered_hand = graft_s - graft_excess, hand_s - hand_excess
    print(f"\nwith each side's training steps at its own fastest epoch's rate (other work on a shared machine "
          f"removed):\n  graft run {filtered_graft:.1f} s, hand-written {filtered_hand:.1f} s, ratio "
          f"{filtered_graft / filtered_hand:.3f}")

    print("\nfixed costs measured apart (s)")
    for module in ("graft.cli", "torch", "mlflow", "prefect", "dvc.repo"):
        print(f"  import {module:<10} {import_seconds(module):6.2f}")
    print(f"  Prefect temporary server start  {prefect_server_seconds():6.2f}")
    if not args.keep:
        shutil.rmtree(ws.parent, ignore_errors=True)


if __name__ == "__main__":
    main()
