"""A short model card in Markdown: data, classes, strategy, metrics, lineage (logged on the parent run)."""

from __future__ import annotations


from graft.config import Params
from graft.files import read_json_or_empty
from graft.paths import Paths
from graft.summary import labels_line, recipe_line, registered_model


def model_card(params: Params, paths: Paths, tags: dict[str, str]) -> str:
    source, target = (read_json_or_empty(paths.prepared(d) / "manifest.json") for d in ("source", "target"))
    pre, ft, ev, reg = (read_json_or_empty(paths.metric(n)) for n in ("pretrain", "finetune", "evaluate", "register"))
    registered = registered_model(reg.get("candidate")) or "n/a"

    def pct(v):
        return f"{100 * v:.1f}%" if isinstance(v, (int, float)) else "n/a"

    lines = [
        f"# {params.tracking.model_name}" + (f" v{reg['version']}" if reg.get("version") else ""),
        "",
        "## Data",
        f"- Source domain (pretraining): {params.ingest.source.kind}, {len(source.get('classes', []))} classes, "
        f"{source.get('counts', {}).get('train', '?')} training images",
        f"- Target domain: {params.ingest.target.kind}, classes: {', '.join(target.get('classes', []))}",
        f"- Label budget: {params.data.labels_per_class} per class ({target.get('counts', {}).get('train', '?')} images); "
        f"validation {target.get('counts', {}).get('val', '?')}, test {target.get('counts', {}).get('test', '?')} "
        f"(test hash {target.get('hashes', {}).get('test', '?')})",
        f"- Images: {params.data.image_size}x{params.data.image_size}, {params.data.channels} channel(s), raw uint8 in",
        "",
        "## Model",
        f"- Backbone: {params.model.backbone} {params.model.backbone_args or ''}, pretrained: {params.pretrain.weights}",
        f"- Head: {params.replace_head.head.kind}; fine-tuning: {recipe_line(ft)}, "
        f"{params.finetune.epochs} epochs per run, {params.finetune.optimizer}",
        f"- Labels used: {labels_line(ft)}",
        f"- Verdict (validation): {ev.get('verdict', 'n/a')}; registered: "
        f"{registered}",
        "",
        "## Metrics (target test set)",
        f"- Accuracy: {pct(ev.get('test_acc'))} (from-scratch control: {pct(ev.get('baseline_test_acc'))}); "
        f"transfer gain: {ev.get('transfer_gain', 'n/a')} points",
        f"- Macro-F1: {ev.get('test_macro_f1', 'n/a')}; expected calibration error: {ev.get('test_ece', 'n/a')}",
        f"- Source accuracy of the pretrained backbone: {pct(pre.get('source_test_acc'))}",
        f"- Promotion: {reg.get('reason', 'n/a')}; aliases: {', '.join(reg.get('aliases', [])) or 'none'}",
        "",
        "## Lineage",
        f"- Git commit: {tags.get('graft.git_commit')} (dirty: {tags.get('graft.git_dirty')})",
        f"- Raw data (DVC md5 of data/raw): {tags.get('graft.data_hash')}",
        f"- params.yaml sha256: {tags.get('graft.params_hash')}; pipeline run: {tags.get('graft.pipeline_run_id')}",
        f"- Reproduce: `graft reproduce models:/{params.tracking.model_name}/{reg.get('version', '<version>')}`",
    ]
    return "\n".join(lines) + "\n"
