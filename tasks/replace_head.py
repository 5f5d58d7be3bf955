"""Prefect task for the `replace_head` stage (graft/stages/replace_head.py)."""

from tasks import stage_task

replace_head = stage_task("replace_head")
