"""pretrain: train the backbone (with a throwaway linear head) on the source domain."""

from __future__ import annotations

import torch

from graft import tracking
from graft.config import Params
from graft.models.heads import HeadSpec
from graft.models.io import architecture_of, build_classifier, save_backbone
from graft.paths import Paths
from graft.seeding import derive_seed
from graft.training.common import load_domain, recipe_from, setup_torch, write_history, write_metrics
from graft.training.loop import evaluate, fit


def run(params: Params, paths: Paths) -> dict:
    device = setup_torch(params)
    data, manifest = load_domain(paths, "source")
    architecture = architecture_of(params)
    torch.manual_seed(derive_seed(params.seed, "pretrain", "init"))
    model = build_classifier(architecture, len(manifest["classes"]), HeadSpec(kind="linear"))
    model.set_normalisation(manifest["mean"], manifest["std"])

    history = fit(model, data["train"], data["val"], recipe_from(params.pretrain, params),
                  seed=params.seed, stage="pretrain", device=device, on_epoch=tracking.log_epoch)
    test = evaluate(model, data["test"], params.train.eval_batch_size, device)
    metrics = {"source_test_acc": test["acc"], "source_test_loss": test["loss"],
               "source_val_acc": history[-1]["val_acc"], "epochs": len(history)}
    save_backbone(paths.model("backbone"), model.cpu(), architecture,
                  {"weights": "train", "source_classes": manifest["classes"], "source_data_hash": manifest["hashes"],
                   "source_test_acc": test["acc"]})
    write_metrics(paths.metric("pretrain"), metrics)
    write_history(paths.plot("pretrain"), history)
    return metrics
