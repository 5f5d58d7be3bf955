"""baseline: the control. The same architecture, trained from scratch on the same labelled target data,
with fine-tuning's epochs and optimizer and its own learning rate. Measures what pretraining bought."""

from __future__ import annotations

import torch

from graft import tracking
from graft.config import Params
from graft.models.io import architecture_of, build_classifier, save_classifier
from graft.paths import Paths
from graft.seeding import derive_seed
from graft.stages.replace_head import head_spec
from graft.training.common import load_domain, recipe_from, setup_torch, write_history, write_metrics
from graft.training.loop import fit


def run(params: Params, paths: Paths) -> dict:
    device = setup_torch(params)
    data, manifest = load_domain(paths, "target")
    architecture = architecture_of(params)
    torch.manual_seed(derive_seed(params.seed, "baseline", "init"))
    model = build_classifier(architecture, len(manifest["classes"]), head_spec(params))
    model.set_normalisation(manifest["mean"], manifest["std"])
    recipe = recipe_from(params.finetune, params, lr=params.baseline.lr, weight_decay=params.baseline.weight_decay)
    history = fit(model, data["train"], data["val"], recipe, seed=params.seed, stage="baseline", device=device,
                  on_epoch=tracking.log_epoch)
    save_classifier(paths.model("baseline"), model.cpu(), architecture, manifest["classes"], {"strategy": "from_scratch"})
    metrics = {"val_acc": history[-1]["val_acc"], "val_loss": history[-1]["val_loss"],
               "train_acc": history[-1]["train_acc"], "epochs": len(history)}
    write_metrics(paths.metric("baseline"), metrics)
    write_history(paths.plot("baseline"), history)
    return metrics
