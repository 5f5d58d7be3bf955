"""pretrain: train the backbone (with a throwaway linear head) on the source domain, or import weights
from torchvision or a local file instead (pretrain.weights)."""

from __future__ import annotations

import torch

from graft import tracking
from graft.config import Params
from graft.console import say
from graft.contract import REL, Contract, Plot, model_files, rel
from graft.data.streaming import open_domain
from graft.files import read_json, write_history, write_metrics
from graft.models.heads import HeadSpec
from graft.models.io import architecture_of, build_classifier, save_backbone
from graft.models.weights import is_published, load_into_backbone, load_weights, normalisation_of
from graft.paths import Paths
from graft.seeding import derive_seed
from graft.training.checkpoint import checkpoint_for
from graft.training.distributed import is_primary
from graft.training.loop import evaluate, fit
from graft.training.recipe import recipe_from
from graft.training.runtime import setup_torch

CONTRACT = Contract(
    order=30,
    params=("seed", "data.image_size", "data.channels", "model", "train", "pretrain"),
    deps=(rel(REL.prepared("source")), "data/weights"),  # data/weights: local files pretrain.weights may name
    outs=model_files("backbone"),
    metrics=(rel(REL.metric("pretrain")),),
    plots=(Plot(rel(REL.plot("pretrain")), x="epoch", y="val_acc"),),
)


def run(params: Params, paths: Paths) -> dict:
    if params.pretrain.weights != "train":
        return import_weights(params, paths)
    device = setup_torch(params)
    data, manifest = open_domain(paths, "source")  # in memory, or streamed from shards (ingest.storage)
    architecture = architecture_of(params)
    torch.manual_seed(derive_seed(params.seed, "pretrain", "init"))
    model = build_classifier(architecture, len(manifest["classes"]), HeadSpec(kind="linear"))
    model.set_normalisation(manifest["mean"], manifest["std"])

    checkpoint = checkpoint_for(paths, "pretrain", params, CONTRACT)
    result = fit(model, data["train"], data["val"], recipe_from(params.pretrain, params), seed=params.seed,
                 stage="pretrain", device=device, on_epoch=tracking.log_epoch, checkpoint=checkpoint)
    test = evaluate(model, data["test"], params.train.eval_batch_size, device)
    metrics = {"source_test_acc": test["acc"], "source_test_loss": test["loss"],
               "source_val_acc": result.kept["val_acc"], "epochs": len(result.history),
               "kept_epoch": result.kept_epoch}
    if is_primary():  # under torchrun, process 0 writes for the group
        save_backbone(paths.model("backbone"), model.cpu(), architecture,
                      {"weights": "train", "source_classes": manifest["classes"],
                       "source_data_hash": manifest["hashes"], "source_test_acc": test["acc"]})
        write_metrics(paths.metric("pretrain"), metrics)
        write_history(paths.plot("pretrain"), result.history)
    return metrics


def import_weights(params: Params, paths: Paths) -> dict:
    """Read the weights first, so that a missing file or an offline download fails before any other work."""
    spec = params.pretrain.weights
    architecture = architecture_of(params)
    weights = load_weights(spec, params.model.backbone, paths.root)
    setup_torch(params)
    model = build_classifier(architecture, 1)
    load_into_backbone(model.backbone, weights)
    normalisation = normalisation_of(weights, is_published(architecture["backbone"], architecture["backbone_args"]))
    if normalisation is None:  # a plain state dict of a graft architecture: the source domain's statistics
        manifest = read_json(paths.prepared("source") / "manifest.json")
        normalisation = manifest["mean"], manifest["std"]
    model.set_normalisation(*normalisation)
    record = {"weights": spec, "weights_file": str(weights.file), "weights_sha256": weights.sha256,
              "input_size": architecture["image_size"]}
    save_backbone(paths.model("backbone"), model, architecture, {**record, "source_classes": None})
    metrics = {"weights": spec, "weights_sha256": weights.sha256, "input_size": architecture["image_size"],
               "epochs": 0}
    write_metrics(paths.metric("pretrain"), metrics)
    write_history(paths.plot("pretrain"), [])
    tracking.log_dict(record, "weights.json")
    say(f"pretrain: imported {spec} (sha256 {weights.sha256[:12]}) into a {architecture['backbone']} backbone "
        f"that sees {architecture['image_size']}×{architecture['image_size']} images")
    return metrics
