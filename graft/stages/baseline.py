"""baseline: the control. The same architecture, trained from scratch on the same labelled target data,
the way finetune trains (epochs, optimizer, schedule, augmentation, label smoothing, EMA, best epoch)
but with everything trainable and its own learning rate. Measures what pretraining bought."""

from __future__ import annotations

import torch

from graft import tracking
from graft.config import Params
from graft.contract import REL, Contract, Plot, model_files, rel
from graft.data.store import load_domain
from graft.files import write_history, write_metrics
from graft.models.io import architecture_of, build_classifier, save_classifier
from graft.paths import Paths
from graft.seeding import derive_seed
from graft.stages.replace_head import head_spec
from graft.training.checkpoint import checkpoint_for
from graft.training.distributed import is_primary
from graft.training.loop import fit
from graft.training.recipe import recipe_from
from graft.training.runtime import setup_torch

CONTRACT = Contract(
    order=60,
    # The same architecture and recipe as the fine-tuned model, so that only pretraining differs.
    params=("seed", "data.image_size", "data.channels", "model", "train", "replace_head", "pretrain.weights",
            "pretrain.input_size", "finetune.epochs", "finetune.optimizer", "finetune.momentum", "finetune.schedule",
            "finetune.warmup", "finetune.label_smoothing", "finetune.grad_clip", "finetune.augment", "finetune.keep",
            "finetune.monitor", "finetune.patience", "finetune.ema_decay", "finetune.validate_every", "baseline"),
    deps=(rel(REL.prepared("target")),),
    outs=model_files("baseline"),
    metrics=(rel(REL.metric("baseline")),),
    plots=(Plot(rel(REL.plot("baseline")), x="epoch", y="val_acc"),),
)


def run(params: Params, paths: Paths) -> dict:
    device = setup_torch(params)
    data, manifest = load_domain(paths, "target")
    architecture = architecture_of(params)
    torch.manual_seed(derive_seed(params.seed, "baseline", "init"))
    model = build_classifier(architecture, len(manifest["classes"]), head_spec(params))
    model.set_normalisation(manifest["mean"], manifest["std"])
    recipe = recipe_from(params.finetune, params, lr=params.baseline.lr, weight_decay=params.baseline.weight_decay)
    checkpoint = checkpoint_for(paths, "baseline", params, CONTRACT)
    result = fit(model, data["train"], data["val"], recipe, seed=params.seed, stage="baseline", device=device,
                 on_epoch=tracking.log_epoch, checkpoint=checkpoint)
    kept = result.kept
    metrics = {"val_acc": kept["val_acc"], "val_loss": kept["val_loss"], "train_acc": kept["train_acc"],
               "epochs": len(result.history), "kept_epoch": result.kept_epoch}
    if is_primary():  # under torchrun, process 0 writes for the group
        save_classifier(paths.model("baseline"), model.cpu(), architecture, manifest["classes"],
                        {"strategy": "from_scratch", "kept_epoch": result.kept_epoch})
        write_metrics(paths.metric("baseline"), metrics)
        write_history(paths.plot("baseline"), result.history)
    return metrics
