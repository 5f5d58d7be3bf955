"""finetune: train the grafted model on the target domain with the configured strategy.

With `strategy: auto` (the default) each of `finetune.candidates` is trained, every one in a nested
tracking run of its own, and the one with the best validation score is written; metrics/finetune.json
keeps every candidate's score and why the winner won (graft/training/selection.py)."""

from __future__ import annotations

from graft import tracking
from graft.config import Params
from graft.console import say
from graft.contract import REL, Contract, Plot, model_files, rel
from graft.data.store import load_domain
from graft.files import write_history, write_metrics
from graft.models.io import load_classifier, save_classifier
from graft.paths import Paths
from graft.training.checkpoint import Checkpoint, stage_key
from graft.training.distributed import is_primary
from graft.training.runtime import setup_torch
from graft.training.selection import Step, candidate_strategies, finetune_recipe, fresh_copies, select
from graft.training.strategies import resolve_rates

CONTRACT = Contract(
    order=50,
    params=("seed", "train", "finetune"),
    deps=(*model_files("grafted"), rel(REL.prepared("target"))),
    outs=model_files("finetuned"),
    metrics=(rel(REL.metric("finetune")),),
    plots=(Plot(rel(REL.plot("finetune")), x="epoch", y="val_acc"),),
)


def describe(params: Params) -> str:
    fp = params.finetune
    tried = candidate_strategies(params)
    parts = [f"strategy auto (tries {', '.join(tried)})" if fp.strategy == "auto" else f"strategy {fp.strategy}"]
    for name in tried:
        head, backbone = resolve_rates(name, fp.lr, fp.backbone_lr)
        rates = {"linear_probe": f"head lr {head:g}", "lp_ft": f"probe lr {head:g}, then all at {backbone:g}"}
        parts.append(f"{name}: {rates.get(name, f'head lr {head:g}, backbone lr {backbone:g}')}")
    if "gradual_unfreeze" in tried:
        parts.append(f"gradual_unfreeze: {fp.freeze_epochs} frozen epoch(s) then rates × {fp.unfrozen_lr_factor}")
    if fp.layer_decay < 1:
        parts.append(f"layer decay {fp.layer_decay}")
    parts.append(f"{fp.epochs} epochs per run, {fp.optimizer} {fp.schedule}")
    return "; ".join(parts)


def run(params: Params, paths: Paths) -> dict:
    device = setup_torch(params)
    data, manifest = load_domain(paths, "target")
    grafted = paths.model("grafted")
    model, meta = load_classifier(grafted)
    if meta["classes"] != manifest["classes"]:
        raise ValueError(f"{grafted} was grafted for classes {meta['classes']}, but the target data has "
                         f"{manifest['classes']}; rerun replace_head")
    fp = params.finetune
    counts = manifest["counts"]
    say(f"finetune: {describe(params)}")
    say(f"finetune: {counts['train']} training labels ({manifest['label_budget']} per class), "
        f"{counts['val']} validation labels to choose and stop by")
    key = stage_key(params, list(CONTRACT.params), CONTRACT.dep_paths(paths.root), "finetune")
    folder = paths.checkpoints("finetune")

    def checkpoint_for(step: Step) -> Checkpoint:
        # One folder per run of the loop: a checkpoint clears out the others in its folder.
        return Checkpoint(folder / step.label, f"{key}-{_digest(repr(step.recipe))}", f"finetune ({step.label})")

    def scope(name: str, info: dict):
        say(f"finetune: candidate {name}")
        return tracking.nested_run(f"finetune: {name}", info, {"graft.candidate_strategy": name})

    auto = fp.strategy == "auto"
    base = finetune_recipe(params)
    selection = select(fresh_copies(model), data["train"], data["val"], base, candidate_strategies(params), fp.lr,
                       fp.backbone_lr, seed=params.seed, stage="finetune", device=device,
                       on_epoch=tracking.log_epoch, checkpoint_for=checkpoint_for, scope=scope if auto else None)
    chosen = selection.chosen
    if auto:
        for c in selection.candidates:
            say(f"finetune: {c.name:<16} validation accuracy {c.kept['val_acc']:.1%}, loss {c.kept['val_loss']:.3f} "
                f"({len(c.history)} epochs, {c.seconds:.1f}s)")
        say(f"finetune: kept {chosen.name}: {selection.reason}")
        for row in chosen.history:  # the stage run shows the kept recipe's curves, as with a named strategy
            tracking.log_epoch(row)
    model.load_state_dict(chosen.state)
    metrics = {**chosen.summary(), "stopped_early": chosen.stopped_early, "strategy": fp.strategy,
               "chosen": chosen.name, "reason": selection.reason,
               "train_labels": counts["train"], "val_labels": counts["val"]}
    if auto:
        metrics["candidates"] = {c.name: c.summary() for c in selection.candidates}
    if is_primary():  # under torchrun, process 0 writes for the group
        save_classifier(paths.model("finetuned"), model.cpu(), meta["architecture"], meta["classes"],
                        {"strategy": chosen.name, "selected_by": fp.strategy,
                         "backbone_weights": meta.get("backbone_weights"),
                         "backbone_weights_sha256": meta.get("backbone_weights_sha256"),
                         "kept_epoch": chosen.kept_epoch})
        write_metrics(paths.metric("finetune"), metrics)
        write_history(paths.plot("finetune"), chosen.history)
    return {k: v for k, v in metrics.items() if k != "candidates"}


def _digest(text: str) -> str:
    import hashlib

    return hashlib.sha256(text.encode()).hexdigest()[:8]
