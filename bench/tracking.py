"""What MLflow logging costs the training loop: time per `log_epoch` call against a real sqlite store.

    .venv/bin/python bench/tracking.py [--epochs 200]

Prints the mean and p95 cost of one per-epoch log (one batched write of ~10 metrics), and puts
it next to the time of one training epoch of the default pipeline (measured here too).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from graft import tracking
from graft.data.synthetic import default_classes, generate
from graft.models.backbones import create_backbone
from graft.models.classifier import GraftClassifier
from graft.training.loop import fit
from graft.training.recipe import Recipe


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=200, help="log calls to time")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="graft-bench-"))
    row = {"epoch": 0, "train_loss": 0.5, "train_acc": 0.8, "val_loss": 0.6, "val_acc": 0.7, "images_per_sec": 3000.0,
           "trainable_params": 120000, "lr_decay": 1e-3, "lr_no_decay": 1e-3, "phase": 1}
    costs = []
    with tracking.stage_run(root, "bench", "finetune", None, {"bench": True}, {}):
        tracking.log_epoch(dict(row, epoch=0))  # the first call pays for the connection
        for epoch in range(1, args.epochs + 1):
            start = time.perf_counter()
            tracking.log_epoch(dict(row, epoch=epoch))
            costs.append(time.perf_counter() - start)
    costs_ms = sorted(c * 1000 for c in costs)

    torch.set_num_threads(2)
    data = generate(default_classes("source"), 400, 32, 3, seed=0)  # 7200 images, the default source train size
    model = GraftClassifier(create_backbone("tiny_cnn", 3, 32, width=32), len(data.classes))
    start = time.perf_counter()
    fit(model, data, data, Recipe(epochs=1, lr=1e-3), seed=0, stage="bench", device=torch.device("cpu"))
    epoch_s = time.perf_counter() - start

    mean = statistics.mean(costs_ms)
    print(f"log_epoch on sqlite ({args.epochs} calls): mean {mean:.2f} ms, p95 {costs_ms[int(0.95 * len(costs_ms))]:.2f} ms")
    print(f"one default pretrain epoch (7200 images, tiny_cnn width 32): {epoch_s:.2f} s")
    print(f"logging overhead per epoch: {100 * mean / 1000 / epoch_s:.3f}% of the epoch")


if __name__ == "__main__":
    main()
