"""One module per stage: its `CONTRACT` (graft/contract.py: what it reads and writes) and
`run(params, paths) -> dict` (its summary metrics).

`STAGES`, the DAG order, is read from the generated dvc.yaml beside this package (graft/dvc_yaml.py writes
it from the contracts): adding a stage is adding its module, then `graft dag --write`.
"""

from __future__ import annotations

from functools import lru_cache


@lru_cache(maxsize=None)
def _stages() -> tuple[str, ...]:
    from graft.code_deps import REPO
    from graft.files import read_yaml

    return tuple(read_yaml(REPO / "dvc.yaml")["stages"])


def __getattr__(name: str):
    if name == "STAGES":
        return _stages()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def get_stage(name: str):
    """The stage module by name (imported lazily: most stages import torch)."""
    import importlib

    if name not in _stages():
        raise ValueError(f"unknown stage {name!r}; stages: {', '.join(_stages())}")
    return importlib.import_module(f"graft.stages.{name}")
