"""What every training stage does the same way: torch set-up, recipes from params, checkpoints, writing results."""

from __future__ import annotations

import csv
import os
from dataclasses import fields
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
    # Bit-identical reruns on the same machine and build, which `graft reproduce` and resumed runs rely on
    # (README; tests/e2e/test_registry.py, tests/faults/test_resume.py); cuBLAS needs a fixed
    # workspace for that, and must be told before its first call.
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True, warn_only=True)
    # That mode also fills every new tensor with NaN, to expose reads of uninitialised memory: a fifth of
    # a training step's CPU time (BENCHMARKS.md), and no result depends on it.
    torch.utils.deterministic.fill_uninitialized_memory = False
    return distributed.join(resolve_device(params.train.device))


def recipe_from(optim: OptimParams, params: Params, **overrides) -> Recipe:
    """The loop's recipe from a stage's section: every field of OptimParams (how a stage trains) by name,
    the batch sizes from `train`, then `overrides` (a rate the stage chooses, finetune's strategy settings).
    Nothing is copied by hand, so a new OptimParams field reaches the loop once Recipe has it."""
    recipe_fields = {f.name for f in fields(Recipe)}
    shared = {name: getattr(optim, name) for name in OptimParams.model_fields if name in recipe_fields}
    shared["augment"] = AugmentSpec(**optim.augment.model_dump())
    train = {name: getattr(params.train, name) for name in ("batch_size", "eval_batch_size", "sync_bn")}
    return Recipe(**{**shared, **train, **overrides})


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
