"""What every training stage does the same way: torch set-up, recipes from params, checkpoints, writing results."""

from __future__ import annotations

import csv
import os
from pathlib import Path

import torch

from graft.config import OptimParams, Params
from graft.contract import Contract
from graft.data.dataset import ImageDataset
from graft.data.store import load_dataset
from graft.files import read_json, write_json
from graft.paths import Paths
from graft.training import distributed
from graft.training.augment import AugmentSpec
from graft.training.checkpoint import Checkpoint, stage_key
from graft.training.device import resolve_device
from graft.training.loop import Recipe
from graft.training.memory import keep_freed_memory


def setup_torch(params: Params) -> torch.device:
    """Threads, determinism, the allocator and the device; under torchrun, also joins the process group."""
    keep_freed_memory()  # without it, a CPU step can spend a third of its time faulting pages in (memory.py)
    threads = distributed.threads_per_process(params.train.threads)
    if threads:
        torch.set_num_threads(threads)
    # Bit-identical reruns on the same machine and build (DESIGN: determinism); cuBLAS needs a fixed
    # workspace for that, and must be told before its first call.
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True, warn_only=True)
    # That mode also fills every new tensor with NaN, to expose reads of uninitialised memory: a fifth of
    # a training step's CPU time (BENCHMARKS.md), and no result depends on it.
    torch.utils.deterministic.fill_uninitialized_memory = False
    return distributed.join(resolve_device(params.train.device))


def recipe_from(optim: OptimParams, params: Params, *, lr: float | None = None,
                weight_decay: float | None = None) -> Recipe:
    """The loop's recipe from a stage's section: everything trains, at one rate (finetune adds its strategy)."""
    return Recipe(
        epochs=optim.epochs, lr=lr if lr is not None else optim.lr, optimizer=optim.optimizer,
        weight_decay=weight_decay if weight_decay is not None else optim.weight_decay, momentum=optim.momentum,
        schedule=optim.schedule, warmup=optim.warmup, batch_size=params.train.batch_size,
        eval_batch_size=params.train.eval_batch_size, label_smoothing=optim.label_smoothing,
        grad_clip=optim.grad_clip, augment=AugmentSpec(**optim.augment.model_dump()), keep=optim.keep,
        monitor=optim.monitor, patience=optim.patience, ema_decay=optim.ema_decay, sync_bn=params.train.sync_bn)


def checkpoint_for(paths: Paths, stage: str, params: Params, contract: Contract) -> Checkpoint:
    """The stage's resumable state, keyed by what its contract says it reads: params and input files."""
    return Checkpoint(paths.checkpoints(stage),
                      stage_key(params, list(contract.params), contract.dep_paths(paths.root), stage), stage)


def load_domain(paths: Paths, domain: str) -> tuple[dict[str, ImageDataset], dict]:
    folder = paths.prepared(domain)
    manifest_file = folder / "manifest.json"
    if not manifest_file.exists():
        raise FileNotFoundError(f"{manifest_file}: missing; run `graft run` (or `graft stage prepare`) first")
    return {name: load_dataset(folder / name) for name in ("train", "val", "test")}, read_json(manifest_file)


def write_history(path: Path, history: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fields = list(history[0]) if history else ["epoch"]
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        for row in history:
            writer.writerow({k: (round(v, 6) if isinstance(v, float) else v) for k, v in row.items()})
    tmp.replace(path)


def _rounded(value):
    if isinstance(value, float):
        return round(value, 6)
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    return value


def write_metrics(path: Path, metrics: dict) -> None:
    write_json(path, _rounded(metrics))
