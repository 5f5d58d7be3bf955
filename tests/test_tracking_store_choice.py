"""graft's calls into MLflow's fluent API leave no store behind: not in the environment (child
processes inherit it), not in MLflow's module globals (a later MlflowClient without a registry URI
reads them). Found by the sweep test reading another workspace's registry after a retraining test."""

from __future__ import annotations

import os

import mlflow
from mlflow.tracking import MlflowClient

from graft import tracking


def test_a_fluent_call_leaves_neither_environment_nor_globals_pointing_at_its_store(tmp_path):
    before = mlflow.get_tracking_uri(), mlflow.get_registry_uri()
    env_before = {k: os.environ.get(k) for k in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")}
    with tracking.store.fluent(tmp_path / "a") as fluent:
        assert fluent.get_registry_uri() == tracking.tracking_uri(tmp_path / "a")
    assert (mlflow.get_tracking_uri(), mlflow.get_registry_uri()) == before
    assert {k: os.environ.get(k) for k in env_before} == env_before
    other = tracking.tracking_uri(tmp_path / "b")
    assert MlflowClient(other)._registry_uri == other  # a client for another store registers there
