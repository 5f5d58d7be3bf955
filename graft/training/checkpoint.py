"""Resumable training state, one file per stage under .graft/checkpoints/<stage>/, named by a key.

The key hashes what the run depends on: the params sections the stage reads, its input files and
the stage's code: its import closure inside graft/, the files dvc.yaml lists as its code deps
(graft.code_deps). A run that finds a checkpoint with its own key resumes from it; any other
checkpoint of the stage is stale and removed. Files are written atomically each epoch (temp file,
fsync, rename) outside the DVC outputs (DVC deletes those before a stage runs), and read back with
torch.load(weights_only=True) (tensors and plain containers only: no code can ride along).

A stage leaves its last checkpoint behind; graft.runner deletes the stage's folder only once the
stage's summary is recorded (sent to MLflow, or kept in .graft/pending/), so that nothing is lost between
the last epoch and the record: a rerun with the same key resumes after the last epoch and only writes.
"""

from __future__ import annotations

import hashlib
import io
from functools import lru_cache
from pathlib import Path

import torch

from graft.code_deps import REPO, stage_code
from graft.config import Params, section_hash
from graft.console import say
from graft.contract import Contract
from graft.files import atomic_write_bytes, hash_paths
from graft.paths import Paths

SUFFIX = ".pt"


# How many processes train is left out of the key: a checkpoint holds the plain model's state, so a run
# stopped under torchrun resumes in one process, and the other way round.
LAUNCH_DEFAULTS = {"launcher": "local", "nproc_per_node": 1, "nnodes": 1}


@lru_cache(maxsize=None)
def stage_files(stage: str) -> tuple[str, ...]:
    """The stage's import closure, repository-relative (parsed once per process)."""
    return tuple(stage_code(stage, REPO))


def code_hash(stage: str) -> str:
    """sha256 over the repository-relative names and contents of the stage's import closure."""
    h = hashlib.sha256()
    for rel in stage_files(stage):
        h.update(f"{rel}\0".encode())
        h.update((REPO / rel).read_bytes())
    return h.hexdigest()


def stage_key(params: Params, sections: list[str], inputs: list[Path], stage: str) -> str:
    """A hash of the params `sections` (but the launch settings), the contents of `inputs` and the stage's code."""
    params = params.model_copy(update={"train": params.train.model_copy(update=LAUNCH_DEFAULTS)})
    h = hashlib.sha256()
    for part in (stage, section_hash(params, sections), hash_paths(list(inputs)), code_hash(stage)):
        h.update(part.encode())
    return h.hexdigest()[:20]


class Checkpoint:
    def __init__(self, folder: Path, key: str, stage: str) -> None:
        self.folder = Path(folder)
        self.key = key
        self.stage = stage
        self.path = self.folder / f"{key}{SUFFIX}"

    def load(self) -> dict | None:
        """The saved state for this key, or None; says which, and removes stale checkpoints."""
        stale = [f for f in self.folder.glob(f"*{SUFFIX}") if f != self.path] if self.folder.exists() else []
        for f in stale:
            f.unlink()
        if stale:
            say(f"{self.stage}: its inputs, params or code changed since the last interrupted run; starting over "
                f"(removed {len(stale)} stale checkpoint(s) in {self.folder})")
        if not self.path.exists():
            return None
        try:
            state = self.read()
        except Exception as e:  # noqa: BLE001 - any unreadable checkpoint just means starting over
            say(f"{self.stage}: checkpoint {self.path} is unreadable ({e}); starting over")
            self.path.unlink()
            return None
        if state.get("key") != self.key:
            say(f"{self.stage}: checkpoint {self.path} belongs to other inputs; starting over")
            self.path.unlink()
            return None
        say(f"{self.stage}: resuming after epoch {state['epoch']} from {self.path}")
        return state

    def read(self) -> dict | None:
        """The saved state as it is, or None: no checks, no clean-up (for processes other than the primary,
        which read after the primary's `load`)."""
        if not self.path.exists():
            return None
        return torch.load(self.path, map_location="cpu", weights_only=True)

    def save(self, state: dict) -> None:
        buffer = io.BytesIO()
        torch.save({**state, "key": self.key}, buffer)
        atomic_write_bytes(self.path, buffer.getvalue())


def checkpoint_for(paths: Paths, stage: str, params: Params, contract: Contract) -> Checkpoint:
    """The stage's resumable state, keyed by what its contract says it reads: params and input files."""
    return Checkpoint(paths.checkpoints(stage),
                      stage_key(params, list(contract.params), contract.dep_paths(paths.root), stage), stage)
