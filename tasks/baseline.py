"""Prefect task for the `baseline` stage (graft/stages/baseline.py)."""

from tasks import stage_task

baseline = stage_task("baseline")
