"""One training loop, moved one graft difference at a time from bench/handwritten.py towards graft's
`fit()`: which of graft's choices cost step time (BENCHMARKS.md, "Where the slower steps came from").

    .venv/bin/python bench/step_ablation.py WORKSPACE FLAGS [--epochs 5]

WORKSPACE is a folder where `graft run` prepared the source domain (e.g. `bench/overhead.py --keep`
leaves one). FLAGS is a comma-separated set; `none` is the hand-written loop (float32 data normalised
once, one AdamW group, a constant rate):
  det     torch.use_deterministic_algorithms, as graft's stages run
  uint8   uint8 batches normalised inside the model (GraftClassifier), as graft does
  groups  graft's optimizer: a group per layer group and decay class (graft.training.strategies)
  lr      the rate set on every group at every step from the cosine schedule, as graft's loop does
  place   batches moved with graft's Placement.batch
  fit     graft's fit() itself (with `det`, as the stages run it); `smallval` validates on 64 images
Prints the median and best images per second of the epochs after the first. Run each set more than
once: identical runs differ by 2-3 % on a shared 2-core machine.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import nn

from graft.data.dataset import ImageDataset
from graft.models.backbones import create_backbone
from graft.models.classifier import GraftClassifier
from graft.training.device import Placement
from graft.training.loop import fit
from graft.training.memory import keep_freed_memory
from graft.training.recipe import Recipe
from graft.training.schedules import lr_factor
from graft.training.strategies import make_optimizer

LR, WEIGHT_DECAY, CLIP, BATCH = 0.003, 5e-4, 5.0, 64


def hand_loop(model: GraftClassifier, images: torch.Tensor, labels: torch.Tensor, flags: set[str],
              epochs: int) -> list[float]:
    if "uint8" in flags:
        net = model
    else:
        net = nn.Sequential(model.backbone, model.head)
        images = ((images.float() / 255 - model.mean) / model.std).contiguous(memory_format=torch.channels_last)
    params = list(model.parameters())
    optimizer = (make_optimizer(model, "adamw", WEIGHT_DECAY, 0.9) if "groups" in flags
                 else torch.optim.AdamW(params, lr=LR, weight_decay=WEIGHT_DECAY))
    place = Placement(torch.device("cpu"), torch.channels_last)
    steps = math.ceil(len(labels) / BATCH)
    net.train()
    rates = []
    for epoch in range(epochs):
        start = time.perf_counter()
        order = torch.randperm(len(labels))
        for step, i in enumerate(range(0, len(labels), BATCH)):
            idx = order[i:i + BATCH]
            x, y = images[idx], labels[idx]
            if "place" in flags:
                x, y = place.batch(x), place.batch(y)
            elif "uint8" in flags:
                x = x.contiguous(memory_format=torch.channels_last)
            if "lr" in flags:
                factor = lr_factor("cosine", epoch * steps + step, epochs * steps, 0.25)
                for group in optimizer.param_groups:
                    group["lr"] = LR * group.get("lr_mult", 1.0) * factor
            loss = F.cross_entropy(net(x), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(params, CLIP)
            optimizer.step()
        rates.append(len(labels) / (time.perf_counter() - start))
    return rates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("workspace", type=Path)
    parser.add_argument("flags", help="comma-separated: none, det, uint8, groups, lr, place, fit, smallval")
    parser.add_argument("--epochs", type=int, default=5, help="the first is warm-up and not counted")
    args = parser.parse_args()
    flags = set(args.flags.split(",")) - {"none"}
    keep_freed_memory()  # as graft's stages run (without it, graft's uint8 path can fall into page faults)
    torch.set_num_threads(2)
    if "det" in flags or "fit" in flags:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.utils.deterministic.fill_uninitialized_memory = False
    folder = args.workspace / "data/prepared/source"
    manifest = json.loads((folder / "manifest.json").read_text())
    train = load_file(str(folder / "train.safetensors"))
    torch.manual_seed(0)
    model = GraftClassifier(create_backbone("tiny_cnn", 3, 32, width=32), len(manifest["classes"]))
    model.set_normalisation(manifest["mean"], manifest["std"])
    model = model.to(memory_format=torch.channels_last)
    if "fit" in flags:
        val = load_file(str(folder / "val.safetensors"))
        keep = 64 if "smallval" in flags else len(val["labels"])
        result = fit(model, ImageDataset(train["images"], train["labels"], manifest["classes"]),
                     ImageDataset(val["images"][:keep], val["labels"][:keep], manifest["classes"]),
                     Recipe(epochs=args.epochs, lr=LR, weight_decay=WEIGHT_DECAY, grad_clip=CLIP, batch_size=BATCH),
                     seed=0, stage="ablation", device=torch.device("cpu"))
        rates = [row["images_per_sec"] for row in result.history]
    else:
        rates = hand_loop(model, train["images"], train["labels"], flags, args.epochs)
    print(f"{args.flags:<36} median {statistics.median(rates[1:]):6.0f}  best {max(rates[1:]):6.0f} img/s")


if __name__ == "__main__":
    main()
