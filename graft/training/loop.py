"""The training loop: shuffle, forward, loss, backward, clip, step, schedule, validate, report.

Data is already uint8 tensors in memory; the model normalises on the fly, so there is no
per-image work in the loop.
"""

from __future__ import annotations

import math
import sys
import time
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from graft.data.dataset import ImageDataset
from graft.models.surgery import apply_bn_policy, trainable_parameter_count
from graft.report import say
from graft.seeding import generator


@dataclass
class Recipe:
    """Everything the loop needs to know about how to train (built by the stage from its params)."""

    epochs: int
    lr: float
    optimizer: str = "adamw"
    weight_decay: float = 5e-4
    momentum: float = 0.9
    schedule: str = "cosine"
    batch_size: int = 64
    eval_batch_size: int = 512
    train_bn: bool = True
    grad_clip: float | None = 5.0


def resolve_device(name: str) -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("train.device is cuda but no CUDA device is available; set train.device: auto or cpu")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(name)


def parameter_groups(model: nn.Module, lr: float, weight_decay: float) -> list[dict]:
    """Weight decay on weights only: decaying norms and biases only hurts (timm, fastai)."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim <= 1 or name.endswith(".bias") else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay, "lr": lr, "name": "decay"},
            {"params": no_decay, "weight_decay": 0.0, "lr": lr, "name": "no_decay"}]


def make_optimizer(model: nn.Module, recipe: Recipe) -> torch.optim.Optimizer:
    groups = [g for g in parameter_groups(model, recipe.lr, recipe.weight_decay) if g["params"]]
    if not groups:
        raise ValueError("no trainable parameters: every parameter is frozen")
    if recipe.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=recipe.lr, momentum=recipe.momentum, nesterov=True)
    return torch.optim.AdamW(groups, lr=recipe.lr)


def make_scheduler(optimizer: torch.optim.Optimizer, recipe: Recipe, steps: int):
    if recipe.schedule == "constant":
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps)))


@torch.no_grad()
def predict_logits(model: nn.Module, images: torch.Tensor, batch_size: int, device: torch.device) -> torch.Tensor:
    model.eval()
    out = [model(images[i:i + batch_size].to(device, non_blocking=True)).float().cpu()
           for i in range(0, len(images), batch_size)]
    return torch.cat(out) if out else torch.empty(0)


def evaluate(model: nn.Module, ds: ImageDataset, batch_size: int, device: torch.device) -> dict[str, float]:
    logits = predict_logits(model, ds.images, batch_size, device)
    return {"loss": F.cross_entropy(logits, ds.labels).item(),
            "acc": (logits.argmax(1) == ds.labels).float().mean().item()}


EpochCallback = Callable[[dict], None]


def _progress(total: int, desc: str):
    """A per-epoch bar on a terminal; nothing when output goes to a file (one line per epoch instead)."""
    if not sys.stderr.isatty():
        return None
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, leave=False, unit="batch", dynamic_ncols=True)


def fit(model: nn.Module, train: ImageDataset, val: ImageDataset, recipe: Recipe, *, seed: int, stage: str,
        device: torch.device, on_epoch: EpochCallback | None = None) -> list[dict]:
    """Train `model` in place; returns the per-epoch history (one dict per epoch)."""
    model.to(device)
    optimizer = make_optimizer(model, recipe)
    steps_per_epoch = math.ceil(len(train) / recipe.batch_size)
    scheduler = make_scheduler(optimizer, recipe, recipe.epochs * steps_per_epoch)
    history: list[dict] = []
    for epoch in range(1, recipe.epochs + 1):
        model.train()
        apply_bn_policy(model, recipe.train_bn)
        # Seeded by (seed, stage, epoch): the same order whether or not earlier epochs ran in this process.
        torch.manual_seed(generator(seed, stage, "epoch", epoch).initial_seed())
        order = torch.randperm(len(train), generator=generator(seed, stage, "shuffle", epoch))
        lrs = [g["lr"] for g in optimizer.param_groups]
        bar = _progress(steps_per_epoch, f"{stage} {epoch}/{recipe.epochs}")
        loss_sum, correct, seen, start = 0.0, 0, 0, time.perf_counter()
        for i in range(0, len(train), recipe.batch_size):
            idx = order[i:i + recipe.batch_size]
            x = train.images[idx].to(device, non_blocking=True)
            y = train.labels[idx].to(device, non_blocking=True)
            logits = model(x)
            loss = F.cross_entropy(logits, y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if recipe.grad_clip:
                nn.utils.clip_grad_norm_(model.parameters(), recipe.grad_clip)
            optimizer.step()
            scheduler.step()
            loss_sum += loss.item() * len(idx)
            correct += (logits.argmax(1) == y).sum().item()
            seen += len(idx)
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{loss_sum / seen:.3f}", acc=f"{correct / seen:.3f}")
        elapsed = time.perf_counter() - start
        if bar is not None:
            bar.close()
        val_metrics = evaluate(model, val, recipe.eval_batch_size, device)
        row = {"epoch": epoch, "train_loss": loss_sum / seen, "train_acc": correct / seen,
               "val_loss": val_metrics["loss"], "val_acc": val_metrics["acc"],
               "images_per_sec": seen / elapsed if elapsed > 0 else 0.0,
               "trainable_params": trainable_parameter_count(model),
               **{f"lr_{g.get('name', j)}": lr for j, (g, lr) in enumerate(zip(optimizer.param_groups, lrs))}}
        history.append(row)
        say(f"{stage}: epoch {epoch}/{recipe.epochs}  train loss {row['train_loss']:.3f} acc {row['train_acc']:.3f}  "
            f"val loss {row['val_loss']:.3f} acc {row['val_acc']:.3f}  {row['images_per_sec']:.0f} img/s")
        if on_epoch is not None:
            on_epoch(row)
    return history
