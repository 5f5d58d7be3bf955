"""Training throughput: graft's loop (`graft.training.loop.fit`) against a minimal hand-written loop.

    .venv/bin/python bench/throughput.py [--backbones tiny_cnn resnet18] [--batch 64] [--repeat 3]
    .venv/bin/python bench/throughput.py --device cuda --images 50000     # on a GPU machine

Same model (graft's backbone and head, same initial weights), same batch size, same recipe (AdamW,
weight decay, cosine schedule per step, gradient clipping at 5), same number of images. The minimal
loop is what one writes by hand: the whole dataset decoded and normalised to float32 once, then
index, forward, loss, backward, clip, step, and nothing else (no metrics, no checkpoints, no logging).
It runs twice: in torch's default memory layout, and in channels_last. On CUDA it adds what graft
does there: bf16 autocast, pinned host batches and non-blocking copies.

Images per second count training steps only (graft's per-epoch validation is left out: its val set
here is tiny). Each run trains `--epochs` epochs; the first is warm-up and is not counted. The
machine is shared, so each figure is the best (and the median) over `--repeat` runs.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import math
import platform
import statistics
import time

import torch
import torch.nn.functional as F
from torch import nn

from graft.data.dataset import ImageDataset
from graft.data.synthetic import default_classes, generate
from graft.models.backbones import create_backbone
from graft.models.classifier import GraftClassifier
from graft.training.device import resolve_device
from graft.training.loop import fit
from graft.training.memory import keep_freed_memory
from graft.training.recipe import Recipe

DEFAULT_IMAGES = {"tiny_cnn": 4096, "resnet18": 512}  # about 1-2 s and 6-10 s an epoch on 2 CPU cores
LR, WEIGHT_DECAY, CLIP = 1e-3, 5e-4, 5.0


def make_model(backbone: str, classes: int, image_size: int) -> GraftClassifier:
    torch.manual_seed(0)
    kwargs = {"width": 32} if backbone == "tiny_cnn" else {}
    return GraftClassifier(create_backbone(backbone, 3, image_size, **kwargs), classes)


def minimal_loop(model: GraftClassifier, data: ImageDataset, batch: int, epochs: int, device: torch.device,
                 channels_last: bool) -> list[float]:
    """The hand-written loop; returns images per second of each epoch."""
    net = nn.Sequential(model.backbone, model.head).to(device)
    images = (data.images.float() / 255 - model.mean) / model.std  # decoded and normalised once
    if channels_last:
        net = net.to(memory_format=torch.channels_last)
        images = images.contiguous(memory_format=torch.channels_last)
    labels = data.labels
    cuda = device.type == "cuda"
    if cuda:
        images, labels = images.pin_memory(), labels.pin_memory()
    optimizer = torch.optim.AdamW(net.parameters(), lr=LR, weight_decay=WEIGHT_DECAY)
    steps = epochs * math.ceil(len(labels) / batch)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 0.5 * (1 + math.cos(math.pi * s / steps)))
    autocast = (lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if cuda else contextlib.nullcontext
    net.train()
    rates = []
    for _ in range(epochs):
        start = time.perf_counter()
        order = torch.randperm(len(labels))
        for i in range(0, len(labels), batch):
            idx = order[i:i + batch]
            x = images[idx].to(device, non_blocking=True)
            y = labels[idx].to(device, non_blocking=True)
            with autocast():
                loss = F.cross_entropy(net(x), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(net.parameters(), CLIP)
            optimizer.step()
            schedule.step()
        if cuda:
            torch.cuda.synchronize()
        rates.append(len(labels) / (time.perf_counter() - start))
    return rates


def graft_loop(model: GraftClassifier, data: ImageDataset, val: ImageDataset, batch: int, epochs: int,
               device: torch.device) -> list[float]:
    recipe = Recipe(epochs=epochs, lr=LR, weight_decay=WEIGHT_DECAY, grad_clip=CLIP, batch_size=batch)
    result = fit(model, data, val, recipe, seed=0, stage="bench", device=device)
    return [row["images_per_sec"] for row in result.history]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbones", nargs="+", default=["tiny_cnn", "resnet18"])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--images", type=int, default=0, help=f"training images (default {DEFAULT_IMAGES})")
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=3, help="per run; the first is warm-up")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2, help="torch threads, as params.yaml's train.threads")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.use_deterministic_algorithms(True, warn_only=True)  # as graft's stages run
    torch.utils.deterministic.fill_uninitialized_memory = False
    keep_freed_memory()  # as graft's stages run; both loops share this process, so both get it
    device = resolve_device(args.device)
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"{platform.processor() or 'cpu'}"
    print(f"device {device} ({where}), torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"batch {args.batch}, {args.image_size}x{args.image_size} RGB")
    classes = default_classes("source")
    print(f"{'backbone':<10}{'loop':<28}{'best img/s':>12}{'median img/s':>14}{'vs minimal':>12}")
    for backbone in args.backbones:
        count = args.images or DEFAULT_IMAGES.get(backbone, 1024)
        data = generate(classes, max(count // len(classes), 1), args.image_size, 3, seed=0)
        val = generate(classes, 1, args.image_size, 3, seed=1)
        initial = make_model(backbone, len(classes), args.image_size)
        loops = {
            "minimal (default layout)": lambda m, d=data: minimal_loop(m, d, args.batch, args.epochs, device, False),
            "minimal (channels_last)": lambda m, d=data: minimal_loop(m, d, args.batch, args.epochs, device, True),
            "graft fit()": lambda m, d=data, v=val: graft_loop(m, d, v, args.batch, args.epochs, device),
        }
        rates: dict[str, list[float]] = {name: [] for name in loops}
        for _ in range(args.repeat):
            for name, loop in loops.items():  # interleaved, so that load from other work hits each alike
                rates[name] += loop(copy.deepcopy(initial))[1:]
        reference = max(rates["minimal (default layout)"])
        for name, r in rates.items():
            print(f"{backbone:<10}{name:<28}{max(r):>12.0f}{statistics.median(r):>14.0f}{max(r) / reference:>11.2f}x")


if __name__ == "__main__":
    main()
