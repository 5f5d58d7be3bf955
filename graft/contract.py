"""A stage's contract, declared once in its own module (`CONTRACT = Contract(...)` in graft/stages/<name>.py):
the params it reads, the files it reads and writes, its DVC metrics and plots, and its place among the
stages. Everything else is derived from it:

- `dvc.yaml` is generated from the contracts (graft/dvc_yaml.py: `graft dag --write`), with each stage's
  code dependencies computed from its import closure (graft/code_deps.py); a test fails when the file on
  disk differs;
- a training stage's checkpoint key hashes `params` and `deps` (graft/training/checkpoint.py);
- the stage order (`graft.stages.STAGES`) is the generated dvc.yaml's.

Paths are written with `REL`, the repository-relative `Paths`, so that a contract and the stage code name a
file through the same function (`REL.model("finetuned")` here, `paths.model("finetuned")` in `run`).
Plain Python: no torch, DVC, Prefect or MLflow.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from graft.paths import Paths

# The repository-relative layout: str(REL.model("x")) == "models/x.safetensors".
REL = Paths(Path("."))


def rel(path: Path) -> str:
    """A repository-relative path as dvc.yaml writes it (POSIX separators, no leading ./)."""
    return PurePosixPath(*Path(path).parts).as_posix()


def model_files(name: str) -> tuple[str, str]:
    """A model's weights and its JSON sidecar (graft.models.io writes both)."""
    weights = REL.model(name)
    return rel(weights), rel(weights.with_suffix(".json"))


@dataclass(frozen=True)
class Plot:
    """A DVC plot: a CSV the stage writes, and how `dvc plots show` draws it."""
    path: str
    x: str
    y: str
    template: str | None = None

    def as_dvc(self) -> dict:
        spec = {"template": self.template} if self.template else {}
        return {self.path: {**spec, "x": self.x, "y": self.y}}


@dataclass(frozen=True)
class Contract:
    """What one stage reads and writes.

    order: where the stage sits among stages that are ready at the same time (the DAG fixes the rest);
        lower runs first. A new stage picks a number between its neighbours'.
    params: params.yaml sections or keys it reads (DVC reruns it when one changes; its checkpoint key).
    deps: files and folders it reads, repository-relative (its code is found by graft.code_deps).
    outs: files and folders it writes (DVC versions them and deletes them before the stage runs).
    metrics: JSON files of headline numbers (`dvc metrics show`, `dvc exp show`).
    plots: CSV histories that `dvc plots show` draws.
    persist: outputs DVC must leave in place before the stage runs; DVC's run cache then never restores
        the stage (right for a stage whose effect is outside DVC, like registering a model).
    """

    order: int
    params: tuple[str, ...]
    deps: tuple[str, ...] = ()
    outs: tuple[str, ...] = ()
    metrics: tuple[str, ...] = ()
    plots: tuple[Plot, ...] = field(default=())
    persist: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for name in ("params", "deps", "outs", "metrics", "persist"):
            value = getattr(self, name)
            if isinstance(value, str):
                raise TypeError(f"Contract.{name} is a tuple of strings, not the string {value!r}")
        written = set(self.outs) | set(self.metrics) | {p.path for p in self.plots}
        if not set(self.persist) <= written:
            raise ValueError(f"Contract.persist names files the stage does not write: "
                             f"{sorted(set(self.persist) - written)}")

    def writes(self) -> tuple[str, ...]:
        """Every path the stage writes: outs, metrics and plots."""
        return (*self.outs, *self.metrics, *(p.path for p in self.plots))

    def dep_paths(self, root: Path) -> list[Path]:
        """The deps as paths under `root` (a checkpoint key hashes their contents)."""
        return [Path(root) / d for d in self.deps]


def dag_order(contracts: dict[str, Contract]) -> list[str]:
    """The stages in an order where each comes after every stage that writes what it reads; among stages
    ready at once, lower `order` first. ValueError on a cycle, or on two stages writing one path."""
    writer: dict[str, str] = {}
    for name, contract in contracts.items():
        for path in contract.writes():
            if path in writer:
                raise ValueError(f"{path} is written by both {writer[path]} and {name}")
            writer[path] = name

    def upstream(name: str) -> set[str]:
        found = set()
        for dep in contracts[name].deps:
            for path, by in writer.items():  # a dep may be a file inside a written folder, or the folder itself
                if by != name and (dep == path or dep.startswith(path.rstrip("/") + "/")):
                    found.add(by)
        return found

    needs = {name: upstream(name) for name in contracts}
    ordered: list[str] = []
    while len(ordered) < len(contracts):
        ready = [n for n in contracts if n not in ordered and needs[n] <= set(ordered)]
        if not ready:
            raise ValueError(f"the stages {sorted(set(contracts) - set(ordered))} depend on each other in a cycle")
        ordered.append(min(ready, key=lambda n: (contracts[n].order, n)))
    return ordered
