"""Where every stage reads and writes, relative to the repository root (one place, no string paths elsewhere)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Paths:
    root: Path

    @classmethod
    def at(cls, root: Path | str = ".") -> "Paths":
        return cls(Path(root).resolve())

    @property
    def params(self) -> Path:
        return self.root / "params.yaml"

    @property
    def dvc_yaml(self) -> Path:
        return self.root / "dvc.yaml"

    @property
    def raw(self) -> Path:
        return self.root / "data" / "raw"

    def raw_test(self, domain: str) -> Path:
        """data/raw/<domain>_test: the test split a source ships apart from its training files (idx
        test_images), when it has one; prepare tests on it instead of carving one out of data/raw/<domain>."""
        return self.raw / f"{domain}_test"

    @property
    def sources(self) -> Path:
        """Where users put their own images (a DVC dependency of `ingest`)."""
        return self.root / "data" / "sources"

    def prepared(self, domain: str) -> Path:
        return self.root / "data" / "prepared" / domain

    @property
    def models(self) -> Path:
        return self.root / "models"

    def model(self, name: str) -> Path:
        """models/<name>.safetensors (its JSON sidecar sits beside it)."""
        return self.models / f"{name}.safetensors"

    @property
    def metrics(self) -> Path:
        return self.root / "metrics"

    def metric(self, stage: str) -> Path:
        return self.metrics / f"{stage}.json"

    @property
    def reports(self) -> Path:
        return self.root / "reports"

    def report(self, name: str) -> Path:
        """reports/<name>.json: detail a stage keeps versioned (a DVC output) but not as a DVC metric, so that
        `dvc exp show` and `dvc metrics show` keep to the headline numbers in metrics/."""
        return self.reports / f"{name}.json"

    @property
    def plots(self) -> Path:
        return self.root / "plots"

    def plot(self, name: str) -> Path:
        return self.plots / f"{name}.csv"

    @property
    def state(self) -> Path:
        """graft's own state, outside every DVC output (DVC deletes outputs before a stage runs)."""
        return self.root / ".graft"

    def checkpoints(self, stage: str) -> Path:
        return self.state / "checkpoints" / stage
