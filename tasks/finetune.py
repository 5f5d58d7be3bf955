"""Prefect task for the `finetune` stage (graft/stages/finetune.py)."""

from tasks import stage_task

finetune = stage_task("finetune")
