import pytest
import torch
from mlflow.tracking import MlflowClient

from graft.data.dataset import ImageDataset
from graft.data.store import load_dataset, save_dataset
from graft.files import read_json
from graft.paths import Paths
from graft.stages import baseline, evaluate, finetune, pretrain, register, replace_head
from graft.stages.register import decide, pick_candidate
from graft.tracking import load_version_model, tracking_uri


@pytest.fixture
def finetuned(stage_root, tiny_params):
    paths = Paths.at(stage_root)
    for stage in (pretrain, replace_head, finetune, baseline, evaluate):
        stage.run(tiny_params, paths)
    # These tests are about the gate: the fine-tuned model is the candidate unless a test says otherwise.
    _set_verdict(paths, "finetuned")
    return paths


def _set_verdict(paths, better):
    """The validation verdict as evaluate writes it (on tiny data either model may win it)."""
    from graft.files import write_json

    metrics = read_json(paths.metric("evaluate"))
    verdict = "negative transfer: the from-scratch control beats ..." if better == "scratch" else "transfer pays: ..."
    write_json(paths.metric("evaluate"), {**metrics, "better_on_val": better, "negative_transfer": better == "scratch",
                                          "verdict": verdict})


def test_first_model_becomes_champion_then_an_equal_one_stays_challenger(finetuned, tiny_params):
    first = register.run(tiny_params, finetuned)
    client = MlflowClient(tracking_uri(finetuned.root))
    name = tiny_params.tracking.model_name
    assert str(client.get_model_version_by_alias(name, "champion").version) == "1"
    assert read_json(finetuned.metric("register"))["reason"] == "no champion yet"
    assert first["challenger_acc"] >= 0

    # The same model again: same test examples, no discordant pairs, so no promotion.
    register.run(tiny_params, finetuned)
    decision = read_json(finetuned.metric("register"))
    assert decision["version"] == "2" and decision["promote"] is False
    assert decision["previous_champion"] == "1" and decision["p_value"] == 1.0
    assert str(client.get_model_version_by_alias(name, "champion").version) == "1"
    assert str(client.get_model_version_by_alias(name, "challenger").version) == "2"
    tags = client.get_model_version(name, "2").tags
    assert tags["graft.gate.promote"] == "False" and tags["graft.gate.test_hash"] == decision["test_hash"]


def test_champion_with_other_classes_is_not_compared(finetuned, tiny_params):
    register.run(tiny_params, finetuned)
    # New data renamed the target classes: the champion cannot be re-scored on the new test split.
    test_file = finetuned.prepared("target") / "test"
    test = load_dataset(test_file)
    save_dataset(test_file, ImageDataset(test.images, test.labels, [c + "_v2" for c in test.classes]))
    register.run(tiny_params, finetuned)
    decision = read_json(finetuned.metric("register"))
    assert decision["promote"] is False and "cannot be compared" in decision["reason"]
    client = MlflowClient(tracking_uri(finetuned.root))
    assert str(client.get_model_version_by_alias(tiny_params.tracking.model_name, "champion").version) == "1"


@pytest.mark.parametrize("challenger,champion,promote", [
    ([1] * 40 + [0] * 10, [0] * 40 + [1] * 10, True),     # clearly better
    ([1] * 25 + [0] * 25, [0] * 25 + [1] * 25, False),    # different mistakes, same accuracy
    ([1] * 26 + [0] * 24, [1] * 25 + [0] * 25, False),    # one example better: not significant
])
def test_decision_uses_paired_test(challenger, champion, promote):
    d = decide(torch.tensor(challenger, dtype=torch.bool), torch.tensor(champion, dtype=torch.bool), alpha=0.05)
    assert d["promote"] is promote


def _constant_predictor(path, cls: int):
    """Overwrite a classifier file with one that always predicts class `cls`."""
    from graft.models.io import load_classifier, save_classifier

    model, meta = load_classifier(path)
    head = model.get_classifier()
    with torch.no_grad():
        head.weight.zero_()
        head.bias.fill_(-10.0)
        head.bias[cls] = 10.0
    save_classifier(path, model, meta["architecture"], meta["classes"], {"strategy": meta.get("strategy")})


def test_clearly_better_challenger_is_promoted(finetuned, tiny_params):
    from graft.models.io import load_classifier

    weights = finetuned.model("finetuned")
    real = weights.read_bytes(), weights.with_suffix(".json").read_bytes()
    test_file = finetuned.prepared("target") / "test"
    test = load_dataset(test_file)
    challenger, _ = load_classifier(weights)
    with torch.no_grad():
        predictions = challenger.eval()(test.images).argmax(1)
    # Score both on the same examples, labelled so that the challenger is right on every one and
    # the champion (always the class the challenger predicts least) is right on at most a third.
    save_dataset(test_file, ImageDataset(test.images, predictions.clone(), test.classes))
    rarest = int(torch.bincount(predictions, minlength=len(test.classes)).argmin())
    _constant_predictor(weights, rarest)
    register.run(tiny_params, finetuned)  # the poor model becomes the first champion

    weights.write_bytes(real[0])
    weights.with_suffix(".json").write_bytes(real[1])
    register.run(tiny_params, finetuned)
    decision = read_json(finetuned.metric("register"))
    assert decision["challenger_acc"] == 1.0 and decision["champion_acc"] <= 1 / 3 + 1e-9
    assert decision["promote"] is True and decision["p_value"] < 0.05
    assert decision["champion_only_correct"] == 0
    client = MlflowClient(tracking_uri(finetuned.root))
    assert str(client.get_model_version_by_alias(tiny_params.tracking.model_name, "champion").version) == "2"


@pytest.mark.slow  # a fresh interpreter
def test_champion_predicts_raw_images_in_a_fresh_process(finetuned, tiny_params):
    import subprocess
    import sys

    register.run(tiny_params, finetuned)
    import os

    assert "MLFLOW_TRACKING_URI" not in os.environ  # graft never redirects later runs or child processes
    code = (
        "import sys, numpy as np, mlflow\n"
        "mlflow.set_tracking_uri(sys.argv[1])\n"
        "model = mlflow.pyfunc.load_model('models:/graft-classifier@champion')\n"
        "probs = model.predict(np.random.default_rng(0).integers(0, 256, (5, 3, 16, 16), dtype=np.uint8))\n"
        "print(probs.shape, round(float(probs.sum(axis=1).mean()), 4))\n")
    out = subprocess.run([sys.executable, "-c", code, tracking_uri(finetuned.root)], capture_output=True, text=True,
                         env={"MLFLOW_DISABLE_TELEMETRY": "true", "PATH": "/usr/bin:/bin"})
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().endswith("(5, 3) 1.0"), out.stdout


def test_the_candidate_follows_the_validation_verdict():
    assert pick_candidate({"better_on_val": "finetuned"}, allow_scratch=True) == ("finetuned", None)
    assert pick_candidate({"better_on_val": "scratch"}, allow_scratch=True) == ("scratch", None)
    candidate, hold_back = pick_candidate({"better_on_val": "scratch"}, allow_scratch=False)
    assert candidate == "finetuned" and "negative transfer" in hold_back and "allow_scratch" in hold_back
    with pytest.raises(FileNotFoundError, match="--force evaluate"):
        pick_candidate({"test_acc": 0.5}, allow_scratch=True)


def test_negative_transfer_registers_the_scratch_model(finetuned, tiny_params):
    _set_verdict(finetuned, "scratch")
    register.run(tiny_params, finetuned)
    decision = read_json(finetuned.metric("register"))
    assert decision["candidate"] == "scratch" and decision["promote"] is True and decision["version"] == "1"
    client = MlflowClient(tracking_uri(finetuned.root))
    tags = client.get_model_version(tiny_params.tracking.model_name, "1").tags
    assert tags["graft.candidate"] == "scratch" and tags["graft.strategy"] == "from_scratch"
    assert tags["graft.transfer"].startswith("negative transfer")
    # The registered weights are the control's: it predicts what models/baseline.safetensors predicts.
    from graft.models.io import load_classifier

    test = load_dataset(finetuned.prepared("target") / "test")
    model = load_version_model(finetuned.root, tiny_params.tracking.model_name, "1")
    control, _ = load_classifier(finetuned.model("baseline"))
    with torch.no_grad():
        expected = control.eval()(test.images).argmax(1)
    assert torch.equal(torch.as_tensor(model.predict(test.images.numpy())).argmax(1), expected)


def test_with_allow_scratch_off_a_losing_fine_tuned_model_is_registered_but_never_promoted(finetuned, tiny_params):
    _set_verdict(finetuned, "scratch")
    params = tiny_params.model_copy(deep=True)
    params.register.allow_scratch = False
    register.run(params, finetuned)
    decision = read_json(finetuned.metric("register"))
    assert decision["candidate"] == "finetuned" and decision["promote"] is False
    assert "negative transfer" in decision["reason"]
    client = MlflowClient(tracking_uri(finetuned.root))
    name = tiny_params.tracking.model_name
    assert str(client.get_model_version_by_alias(name, "challenger").version) == "1"
    assert not client.get_model_version(name, "1").aliases or "champion" not in client.get_model_version(name, "1").aliases
