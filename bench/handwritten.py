"""The training `graft run` does, written by hand with nothing around it: bench/overhead.py's reference.

    .venv/bin/python bench/handwritten.py PARAMS_YAML PREPARED_DIR

Reads the data `graft run` prepared (PREPARED_DIR/{source,target}/{train,test}.safetensors), then:
pretrain the backbone with a linear head on the source domain; put a new linear head on it and train
only the head on the target (the linear probe); train the same architecture from scratch on the target
(the baseline). Same model, epochs, batch size, learning rates, weight decay, cosine schedule, gradient
clipping and seed as params.yaml says. Data is decoded and normalised to float32 once, and the model
runs in channels_last (what graft does, and what a careful hand-written loop does on the CPU).
No validation, checkpoints, metrics files, tracking or orchestration. Prints each part's time, its
fastest epoch in images per second (other work on a shared machine slows some epochs) and its test
accuracy.
"""

import json
import math
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
import yaml
from safetensors.torch import load_file
from torch import nn

from graft.models.backbones import create_backbone


def load(folder, split, mean, std):
    tensors = load_file(f"{folder}/{split}.safetensors")
    images = (tensors["images"].float() / 255 - mean) / std
    return images.contiguous(memory_format=torch.channels_last), tensors["labels"]


def train(model, params, images, labels, epochs, lr, weight_decay, optim, batch):
    """Returns the seconds spent in epochs, and the fastest epoch's images per second."""
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    steps = epochs * math.ceil(len(labels) / batch)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 0.5 * (1 + math.cos(math.pi * s / steps)))
    model.train()
    fastest = spent = 0.0
    for _ in range(epochs):
        start = time.perf_counter()
        order = torch.randperm(len(labels))
        for i in range(0, len(labels), batch):
            idx = order[i:i + batch]
            loss = F.cross_entropy(model(images[idx]), labels[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(params, optim["grad_clip"])
            optimizer.step()
            schedule.step()
        spent += time.perf_counter() - start
        fastest = max(fastest, len(labels) / (time.perf_counter() - start))
    return spent, fastest


@torch.inference_mode()
def accuracy(model, images, labels):
    model.eval()
    return (model(images).argmax(1) == labels).float().mean().item()


def main(params_file, prepared):
    p = yaml.safe_load(Path(params_file).read_text())
    torch.set_num_threads(p["train"]["threads"])
    torch.manual_seed(p["seed"])
    batch = p["train"]["batch_size"]
    channels, size = p["data"]["channels"], p["data"]["image_size"]
    source_stats = json.loads(Path(prepared, "source", "manifest.json").read_text())
    target_stats = json.loads(Path(prepared, "target", "manifest.json").read_text())

    def new_model(classes):
        backbone = create_backbone(p["model"]["backbone"], channels, size, **p["model"]["backbone_args"])
        return nn.Sequential(backbone, nn.Linear(backbone.feature_dim, classes)).to(memory_format=torch.channels_last)

    def stats(manifest):
        return torch.tensor(manifest["mean"]).view(1, -1, 1, 1), torch.tensor(manifest["std"]).view(1, -1, 1, 1)

    start = time.perf_counter()
    x, y = load(f"{prepared}/source", "train", *stats(source_stats))
    x_test, y_test = load(f"{prepared}/source", "test", *stats(source_stats))
    model = new_model(len(source_stats["classes"]))
    pt = p["pretrain"]
    spent, fastest = train(model, list(model.parameters()), x, y, pt["epochs"], pt["lr"], pt["weight_decay"], pt, batch)
    print(f"pretrain  {time.perf_counter() - start:7.1f} s  steps {spent:7.1f} s  fastest epoch {fastest:6.0f} img/s  "
          f"source test accuracy {accuracy(model, x_test, y_test):.3f}")

    start = time.perf_counter()
    x, y = load(f"{prepared}/target", "train", *stats(target_stats))
    x_test, y_test = load(f"{prepared}/target", "test", *stats(target_stats))
    classes, ft = len(target_stats["classes"]), p["finetune"]
    model[1] = nn.Linear(model[0].feature_dim, classes)
    model[0].requires_grad_(False)
    spent, fastest = train(model, list(model[1].parameters()), x, y, ft["epochs"], ft["lr"], ft["weight_decay"], ft, batch)
    print(f"finetune  {time.perf_counter() - start:7.1f} s  steps {spent:7.1f} s  fastest epoch {fastest:6.0f} img/s  "
          f"target test accuracy {accuracy(model, x_test, y_test):.3f}")

    start = time.perf_counter()
    model = new_model(classes)
    bl = p["baseline"]
    spent, fastest = train(model, list(model.parameters()), x, y, ft["epochs"], bl["lr"], bl["weight_decay"], ft, batch)
    print(f"baseline  {time.perf_counter() - start:7.1f} s  steps {spent:7.1f} s  fastest epoch {fastest:6.0f} img/s  "
          f"target test accuracy {accuracy(model, x_test, y_test):.3f}")


if __name__ == "__main__":
    main(*sys.argv[1:3])
