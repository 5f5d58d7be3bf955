"""Prefect task for the `prepare` stage (graft/stages/prepare.py)."""

from tasks import stage_task

prepare = stage_task("prepare")
