"""Prefect task for the `register` stage (graft/stages/register.py)."""

from tasks import stage_task

register = stage_task("register")
