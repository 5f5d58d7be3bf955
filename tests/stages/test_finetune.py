import csv
import io
import shutil

import pytest
import torch

from graft import tracking
from graft.files import read_json
from graft.models.io import load_classifier
from graft.paths import Paths
from graft.stages import finetune, pretrain, replace_head
from tests.conftest import swap_validation_labels


def with_finetune(params, **changes):
    params = params.model_copy(deep=True)
    for key, value in changes.items():
        setattr(params.finetune, key, value)
    return params


def history(paths):
    with open(paths.plot("finetune")) as f:
        return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(f)]


def changed(before, after, prefix):
    """Names of learnable tensors under `prefix` that differ (BatchNorm statistics aside)."""
    a, b = before.state_dict(), after.state_dict()
    return [k for k in a if k.startswith(prefix) and "running" not in k and "num_batches" not in k
            and not torch.equal(a[k], b[k])]


@pytest.mark.parametrize("strategy", ["full", "linear_probe", "gradual_unfreeze"])
def test_strategies(grafted, tiny_params, strategy):
    params = with_finetune(tiny_params, strategy=strategy, epochs=3, freeze_epochs=1)
    before, _ = load_classifier(grafted.model("grafted"))
    metrics = finetune.run(params, grafted)
    after, meta = load_classifier(grafted.model("finetuned"))
    assert meta["strategy"] == strategy == metrics["strategy"] and metrics["epochs"] == 3
    assert changed(before, after, "head.")
    assert bool(changed(before, after, "backbone.")) == (strategy != "linear_probe")

    rows = history(grafted)
    head_params = sum(p.numel() for p in before.head.parameters())
    all_params = sum(p.numel() for p in before.parameters())
    frozen = {"full": [], "linear_probe": [1, 2, 3], "gradual_unfreeze": [1]}[strategy]
    for row in rows:
        is_frozen = row["epoch"] in frozen
        assert row["phase"] == (0 if is_frozen else 1)
        assert row["trainable_params"] == (head_params if is_frozen else all_params)
        assert (row["lr_layer0"] == 0) == is_frozen and row["lr_head"] > 0


def test_gradual_unfreeze_follows_fastai(grafted, tiny_params):
    """Head alone at lr, then everything at lr × unfrozen_lr_factor, each phase with its own schedule."""
    params = with_finetune(tiny_params, strategy="gradual_unfreeze", epochs=4, freeze_epochs=2, schedule="cosine",
                           unfrozen_lr_factor=0.5, lr=0.01)
    finetune.run(params, grafted)
    rows = history(grafted)
    assert [r["phase"] for r in rows] == [0, 0, 1, 1]
    # tiny data: one batch per epoch, so each epoch's first rate is the schedule at that step.
    assert rows[0]["lr_head"] == pytest.approx(0.01) and rows[2]["lr_head"] == pytest.approx(0.005)
    assert rows[1]["lr_head"] < rows[0]["lr_head"] and rows[3]["lr_head"] < rows[2]["lr_head"]


def test_layer_decay_gives_each_group_its_rate(grafted, tiny_params):
    params = with_finetune(tiny_params, strategy="full", layer_decay=0.5, schedule="constant", lr=0.008,
                           backbone_lr=0.004)
    finetune.run(params, grafted)
    row = history(grafted)[0]
    # tiny_cnn has four layer groups below the head.
    assert [row[k] for k in ("lr_head", "lr_layer3", "lr_layer2", "lr_layer1", "lr_layer0")] == \
        pytest.approx([0.008, 0.004, 0.002, 0.001, 0.0005])


@pytest.mark.parametrize("optimizer,schedule", [("sgd", "one_cycle"), ("adamw", "warmup_cosine"),
                                                ("sgd", "constant"), ("adamw", "one_cycle")])
def test_optimizers_and_schedules(grafted, tiny_params, optimizer, schedule):
    params = with_finetune(tiny_params, strategy="full", optimizer=optimizer, schedule=schedule, epochs=4, warmup=0.5,
                           lr=0.01)
    before, _ = load_classifier(grafted.model("grafted"))
    finetune.run(params, grafted)
    after, _ = load_classifier(grafted.model("finetuned"))
    assert changed(before, after, "backbone.") and changed(before, after, "head.")
    rates = [r["lr_head"] for r in history(grafted)]
    if schedule == "constant":
        assert rates == pytest.approx([0.01] * 4)
    else:  # warm up over the first half, then anneal
        assert rates[0] < rates[1] <= rates[2] and rates[3] < rates[2]


def test_mlp_head_fine_tunes(stage_root, tiny_params):
    params = with_finetune(tiny_params, strategy="gradual_unfreeze", epochs=3, layer_decay=0.5)
    params.replace_head.head.kind, params.replace_head.head.hidden = "mlp", [16]
    params.replace_head.head.dropout, params.replace_head.head.batchnorm = 0.2, True
    paths = Paths.at(stage_root)
    pretrain.run(params, paths)
    replace_head.run(params, paths)
    before, _ = load_classifier(paths.model("grafted"))
    finetune.run(params, paths)
    after, meta = load_classifier(paths.model("finetuned"))
    assert meta["head"]["kind"] == "mlp" and changed(before, after, "head.") and changed(before, after, "backbone.")
    assert [r["phase"] for r in history(paths)] == [0, 1, 1]


def test_label_smoothing_and_gradient_clipping_change_training(grafted, tiny_params):
    def final_head(**changes):
        finetune.run(with_finetune(tiny_params, **changes), grafted)
        return load_classifier(grafted.model("finetuned"))[0].head.weight.clone()

    plain = final_head(label_smoothing=0.0, grad_clip=0.0)
    assert not torch.equal(plain, final_head(label_smoothing=0.2, grad_clip=0.0))
    assert not torch.equal(plain, final_head(label_smoothing=0.0, grad_clip=1e-3))


def test_augmentation_ema_and_best_epoch(grafted, tiny_params):
    swap_validation_labels(grafted)  # so that the best epoch is not the last
    # A constant rate: a run of fewer epochs then takes the same steps as the first epochs of this one.
    params = with_finetune(tiny_params, strategy="full", epochs=4, ema_decay=0.9, keep="best", monitor="val_loss",
                           schedule="constant")
    params.finetune.augment.crop_padding, params.finetune.augment.flip = 2, True
    params.finetune.augment.trivial_augment = True
    metrics = finetune.run(params, grafted)
    rows = history(grafted)
    best = min(rows, key=lambda r: r["val_loss"])
    assert best["epoch"] < rows[-1]["epoch"] == 4, rows
    assert metrics["kept_epoch"] == best["epoch"] and metrics["val_loss"] == pytest.approx(best["val_loss"], abs=1e-5)
    assert read_json(grafted.model("finetuned").with_suffix(".json"))["kept_epoch"] == best["epoch"]
    kept = load_classifier(grafted.model("finetuned"))[0].state_dict()

    # The written weights are the best epoch's (its moving average): those of the same run stopped there.
    finetune.run(with_finetune(params, epochs=int(best["epoch"]), keep="last"), grafted)
    stopped = load_classifier(grafted.model("finetuned"))[0].state_dict()
    assert all(torch.equal(kept[k], stopped[k]) for k in kept)
    finetune.run(with_finetune(params, keep="last"), grafted)  # and not the last epoch's
    last = load_classifier(grafted.model("finetuned"))[0].state_dict()
    assert not all(torch.equal(kept[k], last[k]) for k in kept)


def test_early_stopping(grafted, tiny_params):
    # Steps of 1e-10 are below float32 resolution and the frozen statistics stay put: nothing improves.
    params = with_finetune(tiny_params, strategy="linear_probe", train_bn=False, epochs=12, patience=2,
                           monitor="val_loss", keep="best", lr=1e-10, schedule="constant")
    metrics = finetune.run(params, grafted)
    assert metrics["stopped_early"] is True and metrics["epochs"] == 3 and metrics["kept_epoch"] == 1
    assert len(history(grafted)) == metrics["epochs"]


def test_frozen_batchnorm_keeps_its_statistics_when_train_bn_is_false(grafted, tiny_params):
    params = with_finetune(tiny_params, strategy="linear_probe", train_bn=False)
    before, _ = load_classifier(grafted.model("grafted"))
    finetune.run(params, grafted)
    after, _ = load_classifier(grafted.model("finetuned"))
    stats = [k for k in before.state_dict() if "running_mean" in k]
    assert stats, "tiny_cnn has BatchNorm layers"
    for k in stats:
        assert torch.equal(before.state_dict()[k], after.state_dict()[k]), k


class Interrupt(Exception):
    pass


def test_resumed_gradual_unfreeze_matches_an_uninterrupted_run(grafted, tiny_params, tmp_path, monkeypatch, capsys):
    params = with_finetune(tiny_params, strategy="gradual_unfreeze", epochs=4, freeze_epochs=1, layer_decay=0.5,
                           ema_decay=0.5, keep="best")
    other = Paths.at(tmp_path / "other")
    shutil.copytree(grafted.root, other.root)
    finetune.run(params, other)  # uninterrupted

    def stop_after_epoch_2(row):
        if row["epoch"] == 2:
            raise Interrupt

    monkeypatch.setattr(tracking, "log_epoch", stop_after_epoch_2)
    with pytest.raises(Interrupt):
        finetune.run(params, grafted)
    (saved,) = grafted.checkpoints("finetune").rglob("*.pt")
    state = torch.load(saved, weights_only=True)
    assert state["epoch"] == 2 and state["phase"] == 1 and state["train_backbone"] is True
    assert {g["layer"] for g in state["optimizer"]["param_groups"]} == {"head", "layer3", "layer2", "layer1", "layer0"}

    seen = []
    monkeypatch.setattr(tracking, "log_epoch", seen.append)
    capsys.readouterr()
    finetune.run(params, grafted)
    assert "resuming after epoch 2" in capsys.readouterr().out
    assert [r["epoch"] for r in seen] == [1, 2, 3, 4]  # the restored rows are reported again, then the rest
    resumed = seen[2]
    model, _ = load_classifier(grafted.model("grafted"))
    assert resumed["phase"] == 1 and resumed["trainable_params"] == sum(p.numel() for p in model.parameters())
    # After unfreezing both parts peak at rate × 0.5: the head at 0.01, the backbone's top group at 0.001, and
    # layer decay halves that three times down to the stem.
    assert resumed["lr_layer0"] == pytest.approx(resumed["lr_head"] * 0.1 * 0.5 ** 3)
    assert grafted.model("finetuned").read_bytes() == other.model("finetuned").read_bytes()
    def without_speed(rows):
        return [{k: v for k, v in r.items() if k != "images_per_sec"} for r in rows]

    assert without_speed(history(grafted)) == without_speed(history(other))


def test_a_finished_stage_leaves_its_last_checkpoint_until_its_summary_is_recorded(grafted, tiny_params, capsys):
    """The stage keeps its last epoch's state (graft.runner deletes it once the summary is recorded): a rerun
    before that, say after a crash while recording, writes the same model without training an epoch."""
    params = with_finetune(tiny_params, strategy="full", epochs=2)
    finetune.run(params, grafted)
    (saved,) = grafted.checkpoints("finetune").rglob("*.pt")
    assert torch.load(saved, weights_only=True)["epoch"] == 2
    first = grafted.model("finetuned").read_bytes()
    capsys.readouterr()
    finetune.run(params, grafted)
    out = capsys.readouterr().out
    assert "resuming after epoch 2" in out and "epoch 1/2" not in out and "epoch 2/2" not in out
    assert grafted.model("finetuned").read_bytes() == first


def test_checkpoint_of_other_params_is_not_resumed(grafted, tiny_params, monkeypatch, capsys):
    def stop(row):
        raise Interrupt

    monkeypatch.setattr(tracking, "log_epoch", stop)
    with pytest.raises(Interrupt):
        finetune.run(tiny_params, grafted)
    (interrupted,) = grafted.checkpoints("finetune").rglob("*.pt")
    monkeypatch.setattr(tracking, "log_epoch", lambda row: None)
    capsys.readouterr()
    finetune.run(with_finetune(tiny_params, lr=0.002), grafted)
    out = capsys.readouterr().out
    assert "starting over" in out and "resuming" not in out
    left = list(grafted.checkpoints("finetune").rglob("*.pt"))  # the new run's own, for the runner to delete
    assert left and interrupted not in left


def test_checkpoint_loads_without_the_unpickler(grafted, tiny_params, monkeypatch):
    """The checkpoint holds tensors and plain containers only: weights_only=True reads it."""
    monkeypatch.setattr(tracking, "log_epoch", lambda row: (_ for _ in ()).throw(Interrupt()))
    with pytest.raises(Interrupt):
        finetune.run(tiny_params, grafted)
    (saved,) = grafted.checkpoints("finetune").rglob("*.pt")
    torch.load(io.BytesIO(saved.read_bytes()), weights_only=True)


@pytest.mark.e2e
def test_phased_strategies_run_through_the_real_pipeline(finished_copy, prefect_server):
    """graft run (Prefect, DVC, MLflow) with the strategies that train in phases: only finetune and what follows it
    reruns, and the phases reach MLflow. (Every graft run trains linear_probe, lp_ft and full as auto's
    candidates; the tests above run each strategy's stage.)"""
    from mlflow.tracking import MlflowClient

    from graft.cli import main as graft
    from graft.tracking import tracking_uri

    ws = finished_copy  # after one `graft run` with the default strategy
    default = read_json(ws / "metrics/finetune.json")["strategy"]
    client = MlflowClient(tracking_uri(ws))
    assert default == "auto"
    for strategy in ("gradual_unfreeze", "lp_ft"):
        assert graft(["-C", str(ws), "run", "-S", f"finetune.strategy={strategy}"]) == 0
        statuses = read_json(ws / ".graft/last_run.json")
        assert [k for k, v in statuses.items() if v["status"] == "ran"] == ["finetune", "evaluate", "register"]
        assert read_json(ws / "metrics/finetune.json")["strategy"] == strategy
        (run,) = client.search_runs([client.get_experiment_by_name("graft").experiment_id],
                                    "tags.`graft.stage` = 'finetune'", order_by=["attributes.start_time DESC"],
                                    max_results=1)
        assert run.data.params["finetune.strategy"] == strategy
        phases = [m.value for m in client.get_metric_history(run.info.run_id, "phase")]
        assert phases == {"gradual_unfreeze": [0.0, 1.0], "lp_ft": [0.0, 0.0, 1.0, 1.0]}[strategy]
        for metric in ("lr_head", "lr_layer0", "trainable_params"):
            assert client.get_metric_history(run.info.run_id, metric), metric


def test_auto_keeps_the_best_candidate_and_says_why(grafted, tiny_params, tmp_path):
    params = with_finetune(tiny_params, strategy="auto", epochs=3)
    metrics = finetune.run(params, grafted)
    written = read_json(grafted.metric("finetune"))
    assert written["strategy"] == "auto" and set(written["candidates"]) == {"linear_probe", "lp_ft", "full"}
    scores = {name: (c["val_acc"], -c["val_loss"]) for name, c in written["candidates"].items()}
    best = max(scores.values())
    assert written["chosen"] == next(n for n in ("linear_probe", "lp_ft", "full") if scores[n] == best)
    assert written["chosen"] in written["reason"] and metrics["chosen"] == written["chosen"]
    assert written["candidates"]["lp_ft"]["epochs"] == 6 and written["candidates"]["full"]["epochs"] == 3
    assert (written["train_labels"], written["val_labels"]) == (12, 12)
    assert len(history(grafted)) == written["candidates"][written["chosen"]]["epochs"]

    # The kept model is exactly what naming the chosen strategy gives.
    alone = Paths.at(tmp_path / "alone")
    shutil.copytree(grafted.root, alone.root)
    finetune.run(with_finetune(params, strategy=written["chosen"]), alone)
    auto_model, meta = load_classifier(grafted.model("finetuned"))
    alone_model, _ = load_classifier(alone.model("finetuned"))
    assert meta["strategy"] == written["chosen"] and meta["selected_by"] == "auto"
    for key, value in auto_model.state_dict().items():
        assert torch.equal(value, alone_model.state_dict()[key]), key


def test_auto_logs_each_candidate_in_a_nested_run(grafted, tiny_params):
    from mlflow.tracking import MlflowClient

    params = with_finetune(tiny_params, strategy="auto", epochs=2, candidates=["linear_probe", "full"])
    with tracking.stage_run(grafted.root, "graft", "finetune", None, {"finetune.strategy": "auto"},
                            {"graft.pipeline_run_id": "p1"}) as stage_run_id:
        finetune.run(params, grafted)
    client = MlflowClient(tracking.tracking_uri(grafted.root))
    children = client.search_runs([client.get_run(stage_run_id).info.experiment_id],
                                  f"tags.`mlflow.parentRunId` = '{stage_run_id}'", order_by=["attributes.start_time ASC"])
    assert [r.info.run_name for r in children] == ["finetune: linear_probe", "finetune: full"]
    written = read_json(grafted.metric("finetune"))
    for run in children:
        name = run.data.tags["graft.candidate_strategy"]
        assert run.info.status == "FINISHED" and run.data.tags["graft.kind"] == "candidate"
        assert run.data.tags["graft.pipeline_run_id"] == "p1"  # lineage tags carry over from the stage run
        history_ = client.get_metric_history(run.info.run_id, "val_acc")
        assert [m.step for m in history_] == [1, 2]
        assert history_[-1].value == pytest.approx(written["candidates"][name]["val_acc"], abs=1e-6)
        assert float(run.data.params["backbone_lr"]) == written["candidates"][name]["backbone_lr"]
    # The stage run shows the kept candidate's curve, as it would for a named strategy.
    kept = [m.value for m in client.get_metric_history(stage_run_id, "val_acc")]
    assert kept == pytest.approx([r["val_acc"] for r in history(grafted)], abs=1e-6) and len(kept) == 2


def test_switching_strategy_never_keeps_another_strategys_rate(grafted, tiny_params):
    """With rates left at auto, each strategy trains at its own defaults (the logged rates say so)."""
    for strategy, head, backbone in (("linear_probe", 0.01, 0.0), ("full", 0.01, 0.001)):
        finetune.run(with_finetune(tiny_params, strategy=strategy, schedule="constant"), grafted)
        row = history(grafted)[0]
        assert (row["lr_head"], row["lr_layer3"]) == pytest.approx((head, backbone)), strategy
