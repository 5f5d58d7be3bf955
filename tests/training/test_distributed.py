"""Training under torchrun: two CPU processes with the gloo backend, on tiny data.

Tolerance: the two processes of a step see exactly the images one single-process step sees, and DDP
averages their gradients, so only BatchNorm (statistics over half a batch per process) and the order
of floating-point sums differ. Over these 4 epochs the per-epoch training loss stays within 6 %
(relative) of the single-process run's (3.3 % measured), and validation accuracy within 0.15
(absolute: 3 of the 24 validation images; 2 measured)."""

from __future__ import annotations

import json
import os
import shutil
import socket
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
import yaml

from graft.config import ConfigError, validate_params
from graft.data.synthetic import generate
from graft.models.backbones import create_backbone
from graft.models.classifier import GraftClassifier
from graft.training.checkpoint import Checkpoint
from graft.training.loop import fit
from graft.training.recipe import Recipe
from tests.conftest import REPO, tiny_params_dict

pytestmark = pytest.mark.slow  # torchrun process groups

EPOCHS, STOP_AFTER = 4, 2
LOSS_RTOL, ACC_ATOL = 0.06, 0.15


def _data():
    return (generate(["circle_solid", "cross_checker", "ring_dots"], 32, 16, 3, seed=0),
            generate(["circle_solid", "cross_checker", "ring_dots"], 8, 16, 3, seed=1))


def _model():
    torch.manual_seed(0)
    return GraftClassifier(create_backbone("tiny_cnn", in_channels=3, image_size=16, width=8), 3)


def _fit(folder: Path, keep_at: Path | None = None):
    """fit() with a checkpoint in `folder`; a copy of the checkpoint after epoch STOP_AFTER goes to `keep_at`
    (a run stopped there, to resume elsewhere)."""
    checkpoint = Checkpoint(folder, "key", "t")

    def keep(row):
        if keep_at is not None and row["epoch"] == STOP_AFTER:
            keep_at.mkdir(parents=True, exist_ok=True)
            shutil.copy(checkpoint.path, keep_at / checkpoint.path.name)

    train, val = _data()
    recipe = Recipe(epochs=EPOCHS, lr=3e-3, batch_size=32)
    return fit(_model(), train, val, recipe, seed=0, stage="t", device=torch.device("cpu"), on_epoch=keep,
               checkpoint=checkpoint)


def _worker(rank: int, port: int, tmp: Path) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), LOCAL_RANK=str(rank),
                      WORLD_SIZE="2", LOCAL_WORLD_SIZE="2")
    from graft.training.distributed import join

    torch.set_num_threads(1)
    join(torch.device("cpu"))
    full = _fit(tmp / f"ddp-{rank}", keep_at=tmp / "from-ddp")
    resumed = _fit(tmp / "from-single")  # both processes resume from the single process's checkpoint
    if rank == 0:
        (tmp / "ddp.json").write_text(json.dumps({"full": full.history, "resumed": resumed.history,
                                                  "resumed_after": resumed.resumed_after}))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _close(a: list[dict], b: list[dict]) -> None:
    assert [r["epoch"] for r in a] == [r["epoch"] for r in b]
    for x, y in zip(a, b):
        assert x["train_loss"] == pytest.approx(y["train_loss"], rel=LOSS_RTOL), (x, y)
        assert abs(x["val_acc"] - y["val_acc"]) <= ACC_ATOL, (x, y)


def test_two_processes_match_one_and_checkpoints_resume_across(tmp_path):
    torch.set_num_threads(1)
    single = _fit(tmp_path / "single", keep_at=tmp_path / "from-single")
    mp.start_processes(_worker, args=(_free_port(), tmp_path), nprocs=2, start_method="spawn")
    ddp = json.loads((tmp_path / "ddp.json").read_text())

    _close(ddp["full"], single.history)
    # The single process's first epochs, then two processes from its checkpoint.
    assert ddp["resumed_after"] == STOP_AFTER
    assert ddp["resumed"][:STOP_AFTER] == single.history[:STOP_AFTER]
    _close(ddp["resumed"], single.history)
    # And the other way round: one process carries on from the two processes' checkpoint.
    shutil.rmtree(tmp_path / "single")
    shutil.copytree(tmp_path / "from-ddp", tmp_path / "single")
    resumed = _fit(tmp_path / "single")
    assert resumed.resumed_after == STOP_AFTER
    assert resumed.history[:STOP_AFTER] == ddp["full"][:STOP_AFTER]
    _close(resumed.history, single.history)


def test_more_processes_need_the_torchrun_launcher():
    params = tiny_params_dict()
    params["train"]["nproc_per_node"] = 2
    with pytest.raises(ConfigError, match="need launcher: torchrun"):
        validate_params(params)
    params["train"]["launcher"] = "torchrun"
    assert validate_params(params).train.nproc_per_node == 2


def test_graft_stage_launches_a_torchrun_group_whose_first_process_writes(stage_root: Path, capfd):
    from tests.conftest import graft_in_process

    params = tiny_params_dict()
    params["train"].update(launcher="torchrun", nproc_per_node=2, threads=2)
    (stage_root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    shutil.copy(REPO / "dvc.yaml", stage_root / "dvc.yaml")
    # The launcher in this process; torchrun and its two processes are processes of their own, whose output
    # reaches this process's file descriptors (capfd).
    proc = graft_in_process(capfd, stage_root, "stage", "pretrain")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    metrics = json.loads((stage_root / "metrics/pretrain.json").read_text())
    assert metrics["epochs"] == params["pretrain"]["epochs"]
    assert (stage_root / "models/backbone.safetensors").exists()
    # One line per epoch: only process 0 reports.
    assert proc.stdout.count("pretrain: epoch 1/") == 1, proc.stdout

    from graft import tracking

    client = tracking.client_for(stage_root)
    runs = client.search_runs([client.get_experiment_by_name(params["tracking"]["experiment"]).experiment_id],
                              filter_string="tags.`graft.stage` = 'pretrain'")
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"
    history = client.get_metric_history(runs[0].info.run_id, "train_loss")
    assert sorted(m.step for m in history) == list(range(1, params["pretrain"]["epochs"] + 1))
    assert not list((stage_root / ".graft/checkpoints/pretrain").glob("*.pt"))
