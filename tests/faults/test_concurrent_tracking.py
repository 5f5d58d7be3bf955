"""Two processes writing to one MLflow sqlite store at once: neither fails, nothing is lost."""

from __future__ import annotations

import subprocess
import sys

import pytest
from mlflow.tracking import MlflowClient

from graft.tracking import tracking_uri
from tests.conftest import add_empty_store

pytestmark = pytest.mark.faults

WRITER = """
import sys
from pathlib import Path
from graft import tracking
root, name = Path(sys.argv[1]), sys.argv[2]
with tracking.stage_run(root, "concurrency", name, None, {"writer": name}, {}):
    for epoch in range(1, 61):
        tracking.log_epoch({"epoch": epoch, "train_loss": 1.0 / epoch, "val_acc": epoch / 60})
print("ok")
"""


def test_two_writers_on_one_sqlite_store(tmp_path):
    # The schema made first, as the first `graft run` makes it (a copy of one made so); then both writers race on it.
    add_empty_store(tmp_path)
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, str(tmp_path), f"writer{i}"], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for i in range(2)]
    for proc in procs:
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0 and out.strip() == "ok", err[-2000:]
    client = MlflowClient(tracking_uri(tmp_path))
    exp = client.get_experiment_by_name("concurrency")
    runs = client.search_runs([exp.experiment_id])
    assert sorted(r.data.tags["graft.stage"] for r in runs) == ["writer0", "writer1"]
    for run in runs:
        assert run.info.status == "FINISHED"
        history = client.get_metric_history(run.info.run_id, "train_loss")
        assert [m.step for m in history] == list(range(1, 61))
