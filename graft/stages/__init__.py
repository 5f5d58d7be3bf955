"""One module per stage, each exposing `run(params, paths) -> dict` (the stage's summary metrics).

The order below is the DAG order of dvc.yaml.
"""

STAGES = ("ingest", "prepare", "pretrain", "replace_head", "finetune", "baseline", "evaluate", "register")


def get_stage(name: str):
    """The stage module by name (imported lazily: most stages import torch)."""
    import importlib

    if name not in STAGES:
        raise ValueError(f"unknown stage {name!r}; stages: {', '.join(STAGES)}")
    return importlib.import_module(f"graft.stages.{name}")
