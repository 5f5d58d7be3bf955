"""Prefect task for the `ingest` stage (graft/stages/ingest.py)."""

from tasks import stage_task

ingest = stage_task("ingest")
