"""Bad parameters are refused by `graft run` before any work, with the key, the value and what is
allowed, and params.yaml is left as it was."""

from __future__ import annotations

import pytest
import yaml

from tests.conftest import graft_in_process

pytestmark = pytest.mark.faults

CASES = [
    (["finetune.lrr=0.1"], ["unknown key 'finetune.lrr'", "did you mean 'finetune.lr'"]),
    (["finetune.epochs=many"], ["finetune.epochs = 'many'", "integer"]),
    (["finetune.lr=0"], ["finetune.lr = 0", "greater than 0"]),
    (["finetune.lr=-0.01"], ["finetune.lr = -0.01", "greater than 0"]),
    (["ingest.target.classes=[]"], ["ingest.target", "empty list"]),
    (["ingest.source.classes=[circle_dots, ring_solid]", "ingest.target.classes=[ring_solid, cross_dots]"],
     ["share classes ['ring_solid']"]),
    (["model.backbone=resnet1000"], ["model.backbone = 'resnet1000'", "resnet18"]),
    (["finetune.strategy=magic"], ["finetune.strategy = 'magic'", "linear_probe"]),
    (["model.backbone=resnet18"], ["model.backbone_args = {'width': 8}: resnet18 takes no 'width' (tiny_cnn's option)",
                                   "-S ~model.backbone_args.width"]),
    (["ingest.target.kind=imagefolder", "ingest.target.path=x", "ingest.target.classes=[0, 1]"],
     ["ingest.target.classes = [0, 1]: imagefolder classes are names, not numbers"]),
    (["prepare.target_test_per_class=most"], ["prepare.target_test_per_class = 'most'", "or all"]),
]


@pytest.mark.parametrize("overrides,expected", CASES, ids=[c[0][0] for c in CASES])
def test_refused_before_any_work(bare_workspace, capsys, overrides, expected):
    workspace = bare_workspace
    before = (workspace / "params.yaml").read_text()
    args = [a for o in overrides for a in ("-S", o)]
    proc = graft_in_process(capsys, workspace, "run", *args)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    for text in expected:
        assert text in proc.stderr, (text, proc.stderr)
    assert "Traceback" not in proc.stderr
    assert (workspace / "params.yaml").read_text() == before
    assert not (workspace / "data/raw").exists() and not (workspace / "mlflow.db").exists()


def _set(workspace, section: str, key: str, value) -> None:
    params = yaml.safe_load((workspace / "params.yaml").read_text())
    params[section][key] = value
    (workspace / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def test_dry_run_validates_overrides_but_writes_nothing(workspace, capsys):
    before = (workspace / "params.yaml").read_text()
    proc = graft_in_process(capsys, workspace, "run", "--dry-run", "-S", "finetune.lr=0.5")
    assert proc.returncode == 0, proc.stderr
    assert "would set finetune.lr=0.5" in proc.stdout
    assert (workspace / "params.yaml").read_text() == before


def test_dry_run_refuses_options_of_another_backbone(workspace, capsys):
    proc = graft_in_process(capsys, workspace, "run", "--dry-run", "-S", "model.backbone=resnet18")
    assert proc.returncode == 1
    assert "resnet18 takes no 'width' (tiny_cnn's option)" in proc.stderr and "Traceback" not in proc.stderr


def test_dry_run_names_the_keys_a_kind_change_drops(workspace, capsys):
    before = (workspace / "params.yaml").read_text()
    proc = graft_in_process(capsys, workspace, "run", "--dry-run", "-S", "ingest.target.kind=imagefolder",
                            "-S", "ingest.target.path=data/sources/x", "-S", "~ingest.target.classes")
    assert proc.returncode == 0, proc.stderr
    assert "params.yaml: would remove ingest.target.classes" in proc.stdout
    assert "ingest.target: kind synthetic → imagefolder; would drop per_class (synthetic's)" in proc.stdout
    assert (workspace / "params.yaml").read_text() == before


def test_label_budget_above_the_data_names_the_numbers(workspace, capsys):
    graft_in_process(capsys, workspace, "stage", "ingest", check=True)
    _set(workspace, "data", "labels_per_class", 500)
    proc = graft_in_process(capsys, workspace, "stage", "prepare")
    assert proc.returncode == 1
    assert "data.labels_per_class (500)" in proc.stderr and "Lower those numbers or add images" in proc.stderr


def test_a_single_class_is_refused(workspace, capsys):
    params = yaml.safe_load((workspace / "params.yaml").read_text())
    params["ingest"]["target"]["classes"] = ["circle_checker"]
    (workspace / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    proc = graft_in_process(capsys, workspace, "stage", "ingest")
    assert proc.returncode == 1 and "at least two" in proc.stderr, proc.stderr
    assert not (workspace / "data/raw").exists()


@pytest.mark.parametrize("text,expected", [
    ("seed: 0\ndata:\n  image_size: [16\n", "params.yaml is not valid YAML at line 4, column 1"),
    ("", "params.yaml is empty; restore it with `git checkout params.yaml`"),
], ids=["invalid-yaml", "empty"])
def test_unreadable_params_file_is_one_line(workspace, capsys, text, expected):
    (workspace / "params.yaml").write_text(text)
    for args in (["run"], ["run", "-S", "finetune.lr=0.1"], ["status"]):
        proc = graft_in_process(capsys, workspace, *args)
        assert proc.returncode == 1, proc.stdout + proc.stderr
        assert proc.stderr.startswith(f"graft: error: {expected}") and proc.stderr.count("\n") == 1, proc.stderr
    assert (workspace / "params.yaml").read_text() == text
    assert not (workspace / "data/raw").exists()


def test_an_override_that_fails_on_the_data_is_taken_back(workspace, prefect_server, capsys):
    """Valid by the schema, too large for the data: prepare fails, and params.yaml gets its bytes back,
    so the next plain `graft run` does not fail the same way. (In this process: tests/faults/test_bad_input.py
    checks what a failing `graft run` process prints as a whole.)"""
    before = (workspace / "params.yaml").read_bytes()
    proc = graft_in_process(capsys, workspace, "run", "-S", "data.labels_per_class=95")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "params.yaml: set data.labels_per_class=95" in proc.stdout
    assert "graft: error: " in proc.stderr and "data.labels_per_class (95)" in proc.stderr, proc.stderr
    assert "params.yaml restored: the run with -S data.labels_per_class=95 failed" in proc.stderr, proc.stderr
    assert proc.stderr.rstrip().splitlines()[-1].startswith("params.yaml restored"), proc.stderr  # after the error
    assert "Traceback" not in proc.stderr
    assert (workspace / "params.yaml").read_bytes() == before
    # dvc.lock still matches the file: ingest, which ran, is recorded; prepare is next, with the old value.
    dry = graft_in_process(capsys, workspace, "run", "--dry-run", check=True).stdout
    assert "would run  prepare" in dry and "would run  ingest" not in dry, dry
