"""finetune: train the grafted model on the target domain with the configured strategy."""

from __future__ import annotations

from graft import tracking
from graft.config import Params
from graft.models.io import load_classifier, save_classifier
from graft.models.surgery import set_backbone_trainable
from graft.paths import Paths
from graft.report import say
from graft.training.common import load_domain, recipe_from, setup_torch, write_history, write_metrics
from graft.training.loop import fit

STRATEGIES = ("full", "linear_probe")


def apply_strategy(model, strategy: str) -> None:
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown finetune.strategy {strategy!r}; allowed: {', '.join(STRATEGIES)}")
    set_backbone_trainable(model, strategy != "linear_probe")


def run(params: Params, paths: Paths) -> dict:
    device = setup_torch(params)
    data, manifest = load_domain(paths, "target")
    model, meta = load_classifier(paths.model("grafted"))
    if meta["classes"] != manifest["classes"]:
        raise ValueError(f"{paths.model('grafted')} was grafted for classes {meta['classes']}, but the target data has "
                         f"{manifest['classes']}; rerun replace_head")
    fp = params.finetune
    apply_strategy(model, fp.strategy)
    say(f"finetune: strategy {fp.strategy}, {fp.epochs} epochs, {fp.optimizer} lr {fp.lr}, "
        f"{manifest['counts']['train']} labelled images ({manifest['label_budget']} per class)")
    history = fit(model, data["train"], data["val"], recipe_from(fp, params, train_bn=fp.train_bn),
                  seed=params.seed, stage="finetune", device=device, on_epoch=tracking.log_epoch)
    set_backbone_trainable(model, True)
    save_classifier(paths.model("finetuned"), model.cpu(), meta["architecture"], meta["classes"],
                    {"strategy": fp.strategy, "backbone_weights": meta.get("backbone_weights")})
    metrics = {"val_acc": history[-1]["val_acc"], "val_loss": history[-1]["val_loss"],
               "train_acc": history[-1]["train_acc"], "epochs": len(history), "strategy": fp.strategy}
    write_metrics(paths.metric("finetune"), metrics)
    write_history(paths.plot("finetune"), history)
    return metrics
