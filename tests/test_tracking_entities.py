"""MLflow's entities from graft's records: datasets from dvc.yaml and dvc.lock, the model's metrics, source tags."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from mlflow.tracking import MlflowClient

from graft import tracking
from graft.files import write_json
from graft.lineage import public_url, run_tags
from graft.modelcard import candidate_metrics, version_card
from graft.paths import Paths
from graft.tracking import entities
from graft.tracking.entities import DatasetRef, datasets, locked_outputs, model_id_of, stage_datasets

REPO = Path(__file__).resolve().parents[1]
TARGET_MD5, SOURCE_MD5, RAW_MD5 = "a" * 32 + ".dir", "b" * 32 + ".dir", "c" * 32 + ".dir"


def lock() -> dict:
    """A dvc.lock as DVC writes it, cut down to the outputs that matter here."""
    return {"schema": "2.0", "stages": {
        "ingest": {"outs": [{"path": "data/raw", "hash": "md5", "md5": RAW_MD5}]},
        "prepare": {"deps": [{"path": "data/raw", "md5": RAW_MD5}],
                    "outs": [{"path": "data/prepared/source", "hash": "md5", "md5": SOURCE_MD5},
                             {"path": "data/prepared/target", "hash": "md5", "md5": TARGET_MD5}]},
        "evaluate": {"outs": [{"path": "metrics/evaluate.json", "hash": "md5", "md5": "d" * 32}]},
    }}


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """dvc.yaml, dvc.lock and the prepared folders' manifests: what the dataset entries are made from."""
    shutil.copy(REPO / "dvc.yaml", tmp_path / "dvc.yaml")
    (tmp_path / "dvc.lock").write_text(yaml.safe_dump(lock()))
    write_json(tmp_path / "data/prepared/target/manifest.json", {"counts": {"train": 12, "val": 6, "test": 24}})
    write_json(tmp_path / "data/prepared/source/manifest.json", {"counts": {"train": 80, "val": 8, "test": 8}})
    return tmp_path


def test_locked_outputs_are_every_stages_outs():
    assert locked_outputs(lock()) == {"data/raw": RAW_MD5, "data/prepared/source": SOURCE_MD5,
                                      "data/prepared/target": TARGET_MD5, "metrics/evaluate.json": "d" * 32}
    assert locked_outputs({}) == {}


def test_every_dataset_with_its_dvc_path_digest_and_context(root):
    refs = datasets(Paths.at(root), lock())
    assert refs == [
        DatasetRef("target.train", "data/prepared/target", TARGET_MD5, "training", "train", 12),
        DatasetRef("target.val", "data/prepared/target", TARGET_MD5, "validation", "val", 6),
        DatasetRef("target.test", "data/prepared/target", TARGET_MD5, "test", "test", 24),
        DatasetRef("source", "data/prepared/source", SOURCE_MD5, "source", None, 96),
        DatasetRef("raw", "data/raw", RAW_MD5, "raw", None, None),
    ]
    # MLflow keeps a digest of at most 36 characters: DVC's folder hash fits exactly.
    assert all(len(r.digest) <= 36 for r in refs)


def test_a_dataset_dvc_lock_does_not_record_yet_is_left_out(root):
    only_raw = {"stages": {"ingest": lock()["stages"]["ingest"]}}
    assert [r.name for r in datasets(Paths.at(root), only_raw)] == ["raw"]
    assert datasets(Paths.at(root), {}) == []


def test_each_stage_reads_its_dvc_deps_and_only_the_splits_it_uses(root):
    paths, recorded = Paths.at(root), lock()
    names = {stage: [r.name for r in stage_datasets(paths, stage, recorded)]
             for stage in ("ingest", "prepare", "pretrain", "replace_head", "finetune", "baseline", "evaluate")}
    assert names == {"ingest": [], "prepare": ["raw"], "pretrain": ["source"], "replace_head": [],
                     "finetune": ["target.train", "target.val"], "baseline": ["target.train", "target.val"],
                     "evaluate": ["target.val", "target.test"]}


def test_model_id_only_from_a_logged_model_uri():
    assert model_id_of("models:/m-0123abcd") == "m-0123abcd"
    assert model_id_of("models:/graft-classifier/3") is None
    assert model_id_of("models:/graft-classifier@champion") is None
    assert model_id_of("runs:/abc/model") is None


EVALUATION = {"test_acc": 0.9, "test_macro_f1": 0.88, "test_ece": 0.05, "baseline_test_acc": 0.7,
              "baseline_test_macro_f1": 0.65, "transfer_gain": 20.0, "val_acc": 0.92, "baseline_val_acc": 0.75,
              "better_on_val": "finetuned", "negative_transfer": False, "test_examples": 40}


def test_the_candidates_own_metrics_under_evaluates_names_by_split():
    assert candidate_metrics(EVALUATION, "finetuned") == {
        "test": {"test_acc": 0.9, "test_macro_f1": 0.88, "test_ece": 0.05, "transfer_gain": 20.0},
        "val": {"val_acc": 0.92}}
    # The control's keep evaluate's prefix: the UI links a pipeline run's `test_acc` to a model by name.
    assert candidate_metrics(EVALUATION, "scratch") == {
        "test": {"baseline_test_acc": 0.7, "baseline_test_macro_f1": 0.65}, "val": {"baseline_val_acc": 0.75}}
    assert candidate_metrics({}, "finetuned") == {}


def test_version_card_says_which_model_its_numbers_and_where_it_came_from():
    decision = {"promote": True, "reason": "no champion yet"}
    tags = {"graft.git_commit": "0123456789abcdef", "graft.git_dirty": "false", "graft.data_hash": "h.dir"}
    card = version_card("scratch", EVALUATION, decision, {"strategy": None}, tags)
    assert card.startswith("The from-scratch control")
    assert "accuracy 70.0%, macro-F1 0.650; validation accuracy 75.0%" in card
    assert "promoted to champion (no champion yet)" in card and "0123456789ab" in card
    assert "Fine-tuned model, recipe lp_ft." in version_card("finetuned", EVALUATION, decision, {"strategy": "lp_ft"}, tags)


def test_public_url_drops_credentials():
    assert public_url("https://user:s3cret@github.com/org/graft.git") == "https://github.com/org/graft.git"
    assert public_url("https://token@gitlab.example:8443/org/graft") == "https://gitlab.example:8443/org/graft"
    assert public_url("git@github.com:org/graft.git") == "git@github.com:org/graft.git"


def _git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@example.com", *args], cwd=cwd,
                          check=True, capture_output=True, text=True).stdout.strip()


def test_run_tags_carry_the_commit_as_mlflows_source(tmp_path):
    (tmp_path / "params.yaml").write_text("seed: 0\n")
    plain = run_tags(tmp_path, "p1")  # not a git repository: no commit to name
    assert (plain["mlflow.source.type"], plain["mlflow.source.name"]) == ("LOCAL", str(tmp_path.resolve()))
    assert "mlflow.source.git.commit" not in plain
    _git(tmp_path, "init", "-q", "-b", "main")
    _git(tmp_path, "add", "-A")
    _git(tmp_path, "commit", "-qm", "first")
    _git(tmp_path, "remote", "add", "origin", "https://me:token@github.com/org/graft.git")
    tags = run_tags(tmp_path, "p1")
    assert tags["mlflow.source.git.commit"] == tags["graft.git_commit"] == _git(tmp_path, "rev-parse", "HEAD")
    assert tags["mlflow.source.git.branch"] == "main" and tags["mlflow.source.git.dirty"] == "false"
    assert tags["mlflow.source.name"] == tags["mlflow.source.git.repoURL"] == "https://github.com/org/graft.git"


def test_stage_inputs_and_model_metrics_land_in_the_store(root):
    """Against a real (sqlite) store: a stage run's inputs, and metrics linked to a logged model with their split."""
    client = MlflowClient(tracking.tracking_uri(root))
    assert entities.log_stage_inputs(root, "finetune") == []  # no active run: nothing
    with tracking.stage_run(root, "graft", "finetune", None, {}, {}) as run_id:
        assert entities.log_stage_inputs(root, "finetune") == ["target.train", "target.val"]
        model = client.create_logged_model(client.get_run(run_id).info.experiment_id, source_run_id=run_id)
        metrics = {"test": {"test_acc": 0.9}, "val": {"val_acc": 0.8}}
        linked_to = entities.link_model_metrics(root, run_id, f"models:/{model.model_id}", metrics)
    assert linked_to == model.model_id
    inputs = {d.dataset.name: d for d in client.get_run(run_id).inputs.dataset_inputs}
    assert sorted(inputs) == ["target.test", "target.train", "target.val"]
    train = inputs["target.train"]
    assert (train.dataset.digest, json.loads(train.dataset.source), train.dataset.source_type) == (
        TARGET_MD5, {"uri": "data/prepared/target"}, "local")
    assert [(t.key, t.value) for t in train.tags] == [("mlflow.data.context", "training")]
    linked = {m.key: (m.value, m.dataset_name, m.dataset_digest)
              for m in client.get_logged_model(model.model_id).metrics}
    assert linked == {"test_acc": (0.9, "target.test", TARGET_MD5), "val_acc": (0.8, "target.val", TARGET_MD5)}
