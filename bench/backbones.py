"""What each backbone costs to train: parameters, GFLOP per training image, and CPU training images/s.

    .venv/bin/python bench/backbones.py [--backbones tiny_cnn resnet18] [--threads 2] [--seconds 2] [--repeat 3]

Two sizes per backbone, each built by graft's own functions:
- 32 px, graft's default (`data.image_size: 32`, `pretrain.weights: train`): `architecture_of` builds it
  with graft's small-input stem (`adapt_stem`: ResNets get a 3×3/1 first conv and no max-pool, the
  MobileNets and EfficientNet a stride-1 first conv, ConvNeXt a 2×2 patchify stem);
- 224 px with the published stem, as imported weights run (`pretrain.weights: data/weights/<file>`,
  `pretrain.input_size: 0`): `architecture_of` then keeps the architecture as published. tiny_cnn has
  no published form; at 224 px it is graft's tiny_cnn for large inputs (a stride-2 first conv).
For the torchvision backbones it also counts the published stem at 32 px: what graft's stem adds there.

GFLOP: torch.utils.flop_counter.FlopCounterMode on one forward pass of one image (2 FLOP per
multiply-add; convolutions and matrix products only: BatchNorm, activations and pooling are not
counted), times 3 for a training step (the backward pass costs about twice the forward). The counter's
own count of a backward pass is not used: it matches 2× the forward for the ResNets, but counts the
grouped and depthwise convolutions' weight gradients as dense ones (its `conv_backward` formula ignores
`groups`), so that a step of ConvNeXt, the MobileNets or EfficientNet would count 8.7 to 42 forward passes.
Parameters: the backbone's, with the ImageNet classifier removed (as graft keeps it).

Images/s: graft's training loop (`graft.training.loop.fit`) with the from-scratch control's recipe
(every layer trains: AdamW, cosine schedule, gradient clipping), on random uint8 images, after
`setup_torch` (threads, determinism, allocator) as a stage runs; batch 32 at 32 px, 16 at 224 px.
A warm-up of two steps, then `--repeat` timed epochs of as many steps as fill about `--seconds` (at least
one); the best is shown, since other work on a shared machine only ever slows a run.
A linear probe (`finetune.strategy: linear_probe`) runs no backward pass through the frozen backbone: about
a third of these FLOPs.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import platform
import time
from datetime import UTC, datetime
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from graft.config import read_params_file, validate_params
from graft.data.dataset import ImageDataset
from graft.models.backbones import BACKBONES, TORCHVISION_ARCHS
from graft.models.io import architecture_of, build_classifier
from graft.training.loop import fit
from graft.training.recipe import recipe_from
from graft.training.runtime import setup_torch

REPO = Path(__file__).resolve().parents[1]
CLASSES = 10
TRAIN_STEP_FLOP = 3  # forward + backward ≈ 3 × forward
# label -> (side, training batch, imported weights: the published architecture)
SIZES = {"32 px": (32, 32, False), "224 px": (224, 16, True)}


def params_for(backbone: str, image_size: int, imported: bool, threads: int):
    """params.yaml as shipped, with this backbone and size (tiny_cnn keeps the shipped width)."""
    raw = read_params_file(REPO / "params.yaml")
    raw["data"]["image_size"] = image_size
    raw["model"]["backbone"] = backbone
    if backbone != "tiny_cnn":  # the shipped backbone_args (width) are tiny_cnn's
        raw["model"]["backbone_args"] = {}
    raw["train"].update(threads=threads, device="cpu")
    if imported:
        raw["pretrain"].update(weights=f"data/weights/{backbone}.safetensors", input_size=0)
    return validate_params(raw)


def forward_gflop(model: torch.nn.Module, side: int) -> float:
    model.eval()
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        model(torch.zeros(1, 3, side, side, dtype=torch.uint8))
    return counter.get_total_flops() / 1e9


def train_rate(model, params, batch: int, steps: int, device) -> float:
    """Images/s of one epoch of `steps` steps of graft's loop (the control's recipe: every layer trains)."""
    side = model.input_size
    train = ImageDataset(torch.randint(0, 256, (steps * batch, 3, side, side), dtype=torch.uint8),
                         torch.randint(0, CLASSES, (steps * batch,)), [str(c) for c in range(CLASSES)])
    val = ImageDataset(train.images[:2].clone(), train.labels[:2].clone(), train.classes)
    recipe = recipe_from(params.finetune, params, epochs=1, lr=params.baseline.lr, backbone_lr=None,
                         weight_decay=params.baseline.weight_decay, batch_size=batch, strategy="full")
    with contextlib.redirect_stdout(io.StringIO()):  # the loop's per-epoch lines
        return fit(model, train, val, recipe, seed=0, stage="bench", device=device).history[-1]["images_per_sec"]


def images_per_second(params, arch: dict, batch: int, seconds: float, repeat: int) -> tuple[float, int]:
    """The best training images/s of `repeat` timed epochs after a warm-up of two steps (whose rate sizes the
    epochs), and the steps each timed. The best, because other work on a shared machine only ever slows a run."""
    device = setup_torch(params)
    torch.manual_seed(0)
    model = build_classifier(arch, CLASSES)
    warm = train_rate(model, params, batch, 2, device)
    steps = max(1, min(400, round(seconds * warm / batch)))
    return max(train_rate(model, params, batch, steps, device) for _ in range(repeat)), steps


def row(backbone: str, threads: int, seconds: float, repeat: int) -> dict:
    out: dict = {"backbone": backbone}
    for label, (side, batch, imported) in SIZES.items():
        params = params_for(backbone, side, imported, threads)
        arch = architecture_of(params)  # as every stage builds it; with imported weights, the published one
        model = build_classifier(arch, CLASSES)
        fwd = forward_gflop(model, side)
        out[label] = {"params": sum(p.numel() for p in model.backbone.parameters()) / 1e6,
                      "train_gflop": TRAIN_STEP_FLOP * fwd, "batch": batch}
        out[label]["img_s"], out[label]["steps"] = images_per_second(params, arch, batch, seconds, repeat)
    if backbone in TORCHVISION_ARCHS:  # the published stem on 32 px images, for comparison only
        arch = {**architecture_of(params_for(backbone, 32, True, threads)), "image_size": 32}
        out["published_32"] = TRAIN_STEP_FLOP * forward_gflop(build_classifier(arch, CLASSES), 32)
    return out


def table(rows: list[dict]) -> str:
    columns = ["backbone", "parameters (M)", "GFLOP / training image, 32 px, graft's stem",
               "training img/s, 32 px (batch 32)", "GFLOP / training image, 32 px, published stem",
               "GFLOP / training image, 224 px, published stem", "training img/s, 224 px (batch 16)"]
    lines = ["| " + " | ".join(columns) + " |", "|---|" + "--:|" * (len(columns) - 1)]
    for r in rows:
        small, large = r["32 px"], r["224 px"]
        params = f"{small['params']:.2f}"
        if abs(small["params"] - large["params"]) >= 0.005:
            params += f" (224 px: {large['params']:.2f})"
        published_32 = f"{r['published_32']:.3f}" if "published_32" in r else "–"
        lines.append(f"| {r['backbone']} | {params} | {small['train_gflop']:.3f} | {small['img_s']:.0f} | "
                     f"{published_32} | {large['train_gflop']:.2f} | {large['img_s']:.1f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    names = list(BACKBONES)  # in the order graft/models/backbones.py registers them
    parser.add_argument("--backbones", nargs="+", default=names, choices=names)
    parser.add_argument("--threads", type=int, default=2, help="torch threads, as params.yaml's train.threads")
    parser.add_argument("--seconds", type=float, default=2.0, help="about how long each timed epoch runs")
    parser.add_argument("--repeat", type=int, default=3, help="timed epochs per measurement; the best is shown")
    args = parser.parse_args()
    command = ".venv/bin/python bench/backbones.py" + (f" --backbones {' '.join(args.backbones)}"
                                                       if args.backbones != names else "")
    for flag, value, default in (("--threads", args.threads, 2), ("--seconds", args.seconds, 2.0),
                                 ("--repeat", args.repeat, 3)):
        command += f" {flag} {value:g}" if value != default else ""
    load = os.getloadavg()
    print(f"`{command}`: {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, torch {torch.__version__}, "
          f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, {args.threads} torch threads, "
          f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} before")
    rows = []
    for backbone in args.backbones:
        start = time.perf_counter()
        rows.append(row(backbone, args.threads, args.seconds, args.repeat))
        print(f"  {backbone}: {time.perf_counter() - start:.0f} s "
              f"(steps timed: {rows[-1]['32 px']['steps']} at 32 px, {rows[-1]['224 px']['steps']} at 224 px)",
              flush=True)
    print()
    print(table(rows))
    after = os.getloadavg()
    print(f"\nload average {after[0]:.2f} {after[1]:.2f} {after[2]:.2f} after. GFLOP per training image = "
          f"3 × the forward pass's (FlopCounterMode: convolutions and matrix products). Images/s: graft's fit(), "
          f"every layer training, the best of {args.repeat} timed epochs after a two-step warm-up.")


if __name__ == "__main__":
    main()
