from pathlib import Path

from graft.dag import downstream, input_fingerprint, load_dag

REPO = Path(__file__).resolve().parents[1]


def test_downstream_follows_outputs_to_dependents():
    dag = load_dag(REPO)
    assert downstream(dag, "finetune") == ["finetune", "evaluate", "register"]
    assert downstream(dag, "baseline") == ["baseline", "evaluate", "register"]
    assert downstream(dag, "ingest") == list(dag)


def test_fingerprint_changes_with_params_and_deps(workspace):
    decl = load_dag(workspace)["evaluate"]
    first = input_fingerprint(workspace, decl)
    assert input_fingerprint(workspace, decl) == first
    text = (workspace / "params.yaml").read_text()
    (workspace / "params.yaml").write_text(text.replace("calibration_bins: 15", "calibration_bins: 10"))
    second = input_fingerprint(workspace, decl)
    assert second != first
    (workspace / "graft/metrics.py").write_text((workspace / "graft/metrics.py").read_text() + "\n# edit\n")
    assert input_fingerprint(workspace, decl) != second
