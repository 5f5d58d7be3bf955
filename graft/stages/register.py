"""register: add the candidate to the MLflow registry as `challenger`, and promote it to `champion` only
if it beats the current champion on the same test examples (McNemar's test).

The candidate is the better of the fine-tuned model and the from-scratch control on the validation
split (evaluate decides; tagged `graft.candidate`), so graft never ships a model that pretraining made
worse. With register.allow_scratch false it is always the fine-tuned model, and one that lost to the
control is registered but never promoted.

The champion is re-scored here, on the challenger's test split, through the registered model
itself (the same pyfunc a deployment would load), never compared through old numbers."""

from __future__ import annotations

import json
from contextlib import nullcontext

import torch

from graft import tracking
from graft.config import Params
from graft.console import say
from graft.contract import REL, Contract, model_files, rel
from graft.data.store import load_domain
from graft.files import read_json, write_json
from graft.lineage import run_tags
from graft.metrics import mcnemar_one_sided
from graft.modelcard import candidate_metrics, registered_model_card, version_card
from graft.models.io import load_classifier, sidecar_path
from graft.paths import Paths
from graft.tracking import entities
from graft.training.loop import predict_logits
from graft.training.runtime import setup_torch

CONTRACT = Contract(
    order=80,
    params=("train", "tracking", "register"),
    deps=(rel(REL.prepared("target")), *model_files("finetuned"), *model_files("baseline"),
          rel(REL.metric("evaluate"))),
    metrics=(rel(REL.metric("register")),),
    # Its effect is a model version in the MLflow registry, which DVC cannot restore: persist keeps DVC's
    # run cache from "restoring" a metrics/register.json that names a registration this store never saw.
    persist=(rel(REL.metric("register")),),
)


def decide(challenger_correct: torch.Tensor, champion_correct: torch.Tensor | None, alpha: float) -> dict:
    """The promotion decision and its statistics; both vectors are over the same test examples."""
    decision = {"challenger_acc": challenger_correct.double().mean().item()}
    if champion_correct is None:
        return {**decision, "promote": True, "reason": "no champion yet"}
    stats = mcnemar_one_sided(challenger_correct, champion_correct)
    champion_acc = champion_correct.double().mean().item()
    diff = decision["challenger_acc"] - champion_acc
    promote = diff > 0 and stats["p_value"] < alpha
    reason = (f"better by {100 * diff:+.1f} points, p={stats['p_value']:.3g} < {alpha}" if promote
              else f"not better with confidence: {100 * diff:+.1f} points, p={stats['p_value']:.3g} (needs < {alpha})")
    return {**decision, **stats, "champion_acc": champion_acc, "difference": diff, "promote": promote, "reason": reason}


def rescore_champion(paths: Paths, champion: dict, test) -> tuple[torch.Tensor | None, str | None]:
    """(correct per test example, None), or (None, why the champion cannot be compared on these examples)."""
    label = f"champion v{champion['version']}"
    if "graft.classes" not in champion["tags"]:
        return None, (f"{label} carries no graft.classes tag (registered by another tool or an older graft), so "
                      f"it cannot be re-scored on these examples; promote by hand if you mean to replace it")
    classes = json.loads(champion["tags"]["graft.classes"])
    if classes != test.classes:
        return None, (f"{label} predicts classes {classes}, the test set has {test.classes}; "
                      f"the two cannot be compared on the same examples")
    shape = list(test.images.shape[1:])
    if json.loads(champion["tags"].get("graft.input_shape", "null")) != shape:
        return None, f"{label} takes images of shape {champion['tags'].get('graft.input_shape')}, the test set has {shape}"
    try:
        model = tracking.load_version_model(paths.root, champion["name"], champion["version"])
        probs = torch.as_tensor(model.predict(test.images.numpy()))
    except Exception as e:  # noqa: BLE001 - a champion we cannot run is never silently outranked
        return None, f"{label} could not be loaded or run ({type(e).__name__}: {str(e)[:200]})"
    return probs.argmax(1) == test.labels, None


MODEL_FILE = {"finetuned": "finetuned", "scratch": "baseline"}


def pick_candidate(evaluation: dict, allow_scratch: bool) -> tuple[str, str | None]:
    """(which model to register, why it must not be promoted or None), from evaluate's validation verdict."""
    if "better_on_val" not in evaluation:
        raise FileNotFoundError("metrics/evaluate.json has no validation verdict (written by an older graft); "
                                "run `graft run --force evaluate`")
    if evaluation["better_on_val"] == "finetuned":
        return "finetuned", None
    if allow_scratch:
        return "scratch", None
    return "finetuned", ("not promoted: negative transfer (the from-scratch control is better on validation) and "
                         "register.allow_scratch is false")


def run(params: Params, paths: Paths) -> dict:
    device = setup_torch(params)
    data, manifest = load_domain(paths, "target")
    test = data["test"]
    evaluation = read_json(paths.metric("evaluate"))
    candidate, hold_back = pick_candidate(evaluation, params.register.allow_scratch)
    weights = paths.model(MODEL_FILE[candidate])
    challenger, meta = load_classifier(weights)
    challenger_correct = predict_logits(challenger.to(device), test.images, params.train.eval_batch_size,
                                        device).argmax(1) == test.labels

    name = params.tracking.model_name
    champion = tracking.champion_version(paths.root, name)
    champion_correct, cannot_compare = rescore_champion(paths, champion, test) if champion else (None, None)
    if hold_back or cannot_compare:
        decision = {"challenger_acc": challenger_correct.double().mean().item(), "promote": False,
                    "reason": hold_back or cannot_compare}
    else:
        decision = decide(challenger_correct, champion_correct, params.register.alpha)
    decision.update(candidate=candidate, test_examples=len(test), test_hash=manifest["hashes"]["test"],
                    previous_champion=champion["version"] if champion else None)

    own_run = tracking.active_run_id() is None  # called directly (tests): open a run of its own
    context = (tracking.stage_run(paths.root, params.tracking.experiment, "register", None, {}, {})
               if own_run else nullcontext(tracking.active_run_id()))
    with context as run_id:
        tracking.log_artifacts(run_id, paths.root, [weights, sidecar_path(weights)], "weights")
        model_uri = tracking.log_classifier(paths.root, run_id, challenger, meta["classes"],
                                            channels=test.images.shape[1], image_size=test.images.shape[2])
        # The model's own numbers, linked to it and to the split each was measured on (MLflow's Logged models).
        model_id = entities.link_model_metrics(paths.root, run_id, model_uri,
                                               candidate_metrics(evaluation, candidate))
        lineage = run_tags(paths.root, tracking.get_run(paths.root, run_id)["tags"].get("graft.pipeline_run_id", ""))
        graft_lineage = {k: v for k, v in lineage.items() if k.startswith("graft.")}  # not MLflow's run-only tags
        tags = {**{f"graft.gate.{k}": str(v) for k, v in decision.items()}, **graft_lineage,
                "graft.classes": json.dumps(meta["classes"]), "graft.input_shape": json.dumps(list(test.images.shape[1:])),
                "graft.strategy": str(meta.get("strategy")), "graft.candidate": candidate,
                "graft.transfer": evaluation.get("verdict", "")}
        version = tracking.register_version(paths.root, name, model_uri, tags, run_id)
        tracking.set_alias(paths.root, name, "challenger", version)
        if decision["promote"]:
            tracking.set_alias(paths.root, name, "champion", version)
        aliases = sorted(tracking.version_aliases(paths.root, name, version))
        entities.describe_version(paths.root, name, version,
                                  version_card(candidate, evaluation, decision, meta, lineage),
                                  registered_model_card(name), model_id)

    result = {"model_name": name, "version": version, "aliases": aliases, **decision}
    write_json(paths.metric("register"), {k: round(v, 6) if isinstance(v, float) else v for k, v in result.items()})
    verdict = "promoted to champion" if decision["promote"] else "kept as challenger"
    say(f"register: {name} version {version} ({'the from-scratch control' if candidate == 'scratch' else 'fine-tuned'})"
        f" {verdict} ({decision['reason']})")
    return {k: v for k, v in result.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
