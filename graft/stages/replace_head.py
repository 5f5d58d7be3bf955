"""replace_head: graft a new head for the target classes onto the pretrained backbone."""

from __future__ import annotations

from graft.config import Params
from graft.contract import REL, Contract, model_files, rel
from graft.files import read_json
from graft.models.heads import HeadSpec
from graft.models.io import ModelFileError, build_classifier, load_backbone_into, save_classifier, sidecar_path
from graft.models.surgery import replace_head
from graft.paths import Paths
from graft.console import say
from graft.seeding import derive_seed


CONTRACT = Contract(
    order=40,
    params=("seed", "replace_head"),
    deps=(*model_files("backbone"), rel(REL.prepared("target") / "manifest.json")),  # the target's classes
    outs=model_files("grafted"),
)


def head_spec(params: Params) -> HeadSpec:
    return HeadSpec.from_dict(params.replace_head.head.model_dump())


def run(params: Params, paths: Paths) -> dict:
    backbone_file = paths.model("backbone")
    if not sidecar_path(backbone_file).exists():
        raise ModelFileError(f"{sidecar_path(backbone_file)}: missing; run the pretrain stage first")
    backbone_meta = read_json(sidecar_path(backbone_file))
    classes = read_json(paths.prepared("target") / "manifest.json")["classes"]
    # Build with any head, load the backbone, then swap the head through the seam every model shares.
    model = build_classifier(backbone_meta["architecture"], 1)
    load_backbone_into(backbone_file, model)
    spec = head_spec(params)
    replace_head(model, len(classes), spec, seed=derive_seed(params.seed, "replace_head"))
    head_params = sum(p.numel() for p in model.get_classifier().parameters())
    save_classifier(paths.model("grafted"), model, backbone_meta["architecture"], classes,
                    {"backbone_weights": backbone_meta.get("weights"),
                     "backbone_weights_sha256": backbone_meta.get("weights_sha256"),
                     "source_classes": backbone_meta.get("source_classes")})
    say(f"replace_head: {spec.kind} head for {len(classes)} target classes ({head_params} parameters) "
        f"on a {backbone_meta['architecture']['backbone']} backbone")
    return {"num_classes": len(classes), "head_parameters": head_params}
