"""Prefect task for the `pretrain` stage (graft/stages/pretrain.py)."""

from tasks import stage_task

pretrain = stage_task("pretrain")
