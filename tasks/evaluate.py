"""Prefect task for the `evaluate` stage (graft/stages/evaluate.py)."""

from tasks import stage_task

evaluate = stage_task("evaluate")
