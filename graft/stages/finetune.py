"""finetune: train the grafted model on the target domain with the configured strategy."""

from __future__ import annotations

from dataclasses import replace

from graft import tracking
from graft.config import Params
from graft.models.io import load_classifier, save_classifier, sidecar_path
from graft.paths import Paths
from graft.report import say
from graft.training.common import checkpoint_for, load_domain, recipe_from, setup_torch, write_history, write_metrics
from graft.training.distributed import is_primary
from graft.training.loop import Recipe, fit

READS = ["seed", "train", "finetune"]


def finetune_recipe(params: Params) -> Recipe:
    fp = params.finetune
    return replace(recipe_from(fp, params), strategy=fp.strategy, freeze_epochs=fp.freeze_epochs,
                   unfrozen_lr_factor=fp.unfrozen_lr_factor, layer_decay=fp.layer_decay, train_bn=fp.train_bn)


def describe(params: Params) -> str:
    fp = params.finetune
    parts = [f"strategy {fp.strategy}"]
    if fp.strategy == "gradual_unfreeze":
        parts.append(f"{fp.freeze_epochs} frozen epoch(s) then lr × {fp.unfrozen_lr_factor}")
    if fp.layer_decay < 1 and fp.strategy != "linear_probe":
        parts.append(f"layer decay {fp.layer_decay}")
    parts.append(f"{fp.epochs} epochs, {fp.optimizer} lr {fp.lr} {fp.schedule}")
    return ", ".join(parts)


def run(params: Params, paths: Paths) -> dict:
    device = setup_torch(params)
    data, manifest = load_domain(paths, "target")
    grafted = paths.model("grafted")
    model, meta = load_classifier(grafted)
    if meta["classes"] != manifest["classes"]:
        raise ValueError(f"{grafted} was grafted for classes {meta['classes']}, but the target data has "
                         f"{manifest['classes']}; rerun replace_head")
    fp = params.finetune
    say(f"finetune: {describe(params)}, {manifest['counts']['train']} labelled images "
        f"({manifest['label_budget']} per class)")
    checkpoint = checkpoint_for(paths, "finetune", params, READS,
                                [grafted, sidecar_path(grafted), paths.prepared("target")])
    result = fit(model, data["train"], data["val"], finetune_recipe(params), seed=params.seed, stage="finetune",
                 device=device, on_epoch=tracking.log_epoch, checkpoint=checkpoint)
    kept = result.kept
    metrics = {"val_acc": kept["val_acc"], "val_loss": kept["val_loss"], "train_acc": kept["train_acc"],
               "epochs": len(result.history), "kept_epoch": result.kept_epoch,
               "stopped_early": result.stopped_early, "strategy": fp.strategy}
    if is_primary():  # under torchrun, process 0 writes for the group
        save_classifier(paths.model("finetuned"), model.cpu(), meta["architecture"], meta["classes"],
                        {"strategy": fp.strategy, "backbone_weights": meta.get("backbone_weights"),
                         "backbone_weights_sha256": meta.get("backbone_weights_sha256"),
                         "kept_epoch": result.kept_epoch})
        write_metrics(paths.metric("finetune"), metrics)
        write_history(paths.plot("finetune"), result.history)
        checkpoint.finish()
    return metrics
