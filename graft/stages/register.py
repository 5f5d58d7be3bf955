"""register: add the fine-tuned model to the MLflow registry as `challenger`, and promote it to
`champion` only if it beats the current champion on the same test examples (McNemar's test)."""

from __future__ import annotations

from contextlib import nullcontext
from pathlib import Path

import torch

from graft import tracking
from graft.config import Params
from graft.files import write_json
from graft.metrics import mcnemar_one_sided
from graft.models.io import ModelFileError, load_classifier, sidecar_path
from graft.paths import Paths
from graft.report import say
from graft.training.common import load_domain, setup_torch
from graft.training.loop import predict_logits


def _correct(model, test, params: Params, device) -> torch.Tensor:
    logits = predict_logits(model.to(device), test.images, params.train.eval_batch_size, device)
    return logits.argmax(1) == test.labels


def decide(challenger_correct: torch.Tensor, champion_correct: torch.Tensor | None, alpha: float,
           reason_if_no_champion: str = "no champion yet") -> dict:
    """The promotion decision and its statistics; both vectors are over the same test examples."""
    decision = {"challenger_acc": challenger_correct.double().mean().item()}
    if champion_correct is None:
        return {**decision, "promote": True, "reason": reason_if_no_champion}
    stats = mcnemar_one_sided(challenger_correct, champion_correct)
    champion_acc = champion_correct.double().mean().item()
    diff = decision["challenger_acc"] - champion_acc
    promote = diff > 0 and stats["p_value"] < alpha
    reason = (f"better by {100 * diff:+.1f} points, p={stats['p_value']:.3g} < {alpha}" if promote
              else f"not better with confidence: {100 * diff:+.1f} points, p={stats['p_value']:.3g} (needs < {alpha})")
    return {**decision, **stats, "champion_acc": champion_acc, "difference": diff, "promote": promote, "reason": reason}


def _champion_correct(params: Params, paths: Paths, test, device) -> tuple[dict | None, torch.Tensor | None, str | None]:
    """Re-score the current champion on the challenger's test split; (champion, correct, why not)."""
    champion = tracking.champion_version(paths.root, params.tracking.model_name)
    if champion is None:
        return None, None, None
    try:
        folder = tracking.download_version_files(paths.root, champion["source"])
        model, meta = load_classifier(folder / "finetuned.safetensors")
    except (ModelFileError, OSError, Exception) as e:  # noqa: BLE001 - any failure: do not promote blindly
        return champion, None, f"champion v{champion['version']} could not be loaded ({e})"
    if meta["classes"] != test.classes:
        return champion, None, (f"champion v{champion['version']} predicts classes {meta['classes']}, the test set has "
                                f"{test.classes}; the two cannot be compared on the same examples")
    return champion, _correct(model, test, params, device), None


def run(params: Params, paths: Paths) -> dict:
    device = setup_torch(params)
    data, manifest = load_domain(paths, "target")
    test = data["test"]
    weights = paths.model("finetuned")
    challenger, _ = load_classifier(weights)
    challenger_correct = _correct(challenger, test, params, device)
    champion, champion_correct, cannot_compare = _champion_correct(params, paths, test, device)

    if cannot_compare:
        decision = {"challenger_acc": challenger_correct.double().mean().item(), "promote": False, "reason": cannot_compare}
    else:
        decision = decide(challenger_correct, champion_correct, params.register.alpha)
    decision.update(test_examples=len(test), test_hash=manifest["hashes"]["test"],
                    previous_champion=champion["version"] if champion else None)

    name = params.tracking.model_name
    own_run = tracking.active_run_id() is None
    context = (tracking.stage_run(paths.root, params.tracking.experiment, "register", None, {}, {})
               if own_run else nullcontext(tracking.active_run_id()))
    with context as run_id:
        tags = {f"graft.gate.{k}": str(v) for k, v in decision.items()}
        version = tracking.register_version(paths.root, name, run_id, [weights, sidecar_path(weights)], tags)
        tracking.set_alias(paths.root, name, "challenger", version)
        if decision["promote"]:
            tracking.set_alias(paths.root, name, "champion", version)
        aliases = sorted(tracking.version_aliases(paths.root, name, version))

    result = {"model_name": name, "version": version, "aliases": aliases, **decision}
    write_json(paths.metric("register"), {k: round(v, 6) if isinstance(v, float) else v for k, v in result.items()})
    verdict = "promoted to champion" if decision["promote"] else "kept as challenger"
    say(f"register: {name} version {version} {verdict} ({decision['reason']})")
    return {k: v for k, v in result.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
