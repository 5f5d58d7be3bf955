"""Model cards in Markdown: the full one (data, classes, strategy, metrics, lineage) is the pipeline run's
description and model_card.md; short ones describe a registered model version and the registered model."""

from __future__ import annotations

from graft.config import Params
from graft.files import read_json_or_empty
from graft.paths import Paths
from graft.summary import labels_line, recipe_line, registered_model


def model_card(params: Params, paths: Paths, tags: dict[str, str]) -> str:
    source, target = (read_json_or_empty(paths.prepared(d) / "manifest.json") for d in ("source", "target"))
    pre, ft, ev, reg = (read_json_or_empty(paths.metric(n)) for n in ("pretrain", "finetune", "evaluate", "register"))
    registered = registered_model(reg.get("candidate")) or "n/a"

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
        f"- Accuracy: {_pct(ev.get('test_acc'))} (from-scratch control: {_pct(ev.get('baseline_test_acc'))}); "
        f"transfer gain: {ev.get('transfer_gain', 'n/a')} points",
        f"- Macro-F1: {ev.get('test_macro_f1', 'n/a')}; expected calibration error: {ev.get('test_ece', 'n/a')}",
        f"- Source accuracy of the pretrained backbone: {_pct(pre.get('source_test_acc'))}",
        f"- Promotion: {reg.get('reason', 'n/a')}; aliases: {', '.join(reg.get('aliases', [])) or 'none'}",
        "",
        "## Lineage",
        f"- Git commit: {tags.get('graft.git_commit')} (dirty: {tags.get('graft.git_dirty')})",
        f"- Raw data (DVC md5 of data/raw): {tags.get('graft.data_hash')}",
        f"- params.yaml sha256: {tags.get('graft.params_hash')}; pipeline run: {tags.get('graft.pipeline_run_id')}",
        f"- Reproduce: `graft reproduce models:/{params.tracking.model_name}/{reg.get('version', '<version>')}`",
    ]
    return "\n".join(lines) + "\n"


def candidate_metrics(evaluation: dict, candidate: str) -> dict[str, dict[str, float]]:
    """The registered candidate's own numbers in metrics/evaluate.json, under evaluate's names, by the target
    split they were measured on: {"test": {...}, "val": {...}}. The from-scratch control's carry evaluate's
    `baseline_` prefix: MLflow's UI links a run's metric to a model by its name alone, so on the pipeline run
    `test_acc` (the fine-tuned model's) must not point at a from-scratch model."""
    names = ({"test": ["baseline_test_acc", "baseline_test_macro_f1"], "val": ["baseline_val_acc"]}
             if candidate == "scratch" else
             {"test": ["test_acc", "test_macro_f1", "test_ece", "transfer_gain"], "val": ["val_acc"]})
    found = {split: {k: evaluation.get(k) for k in keys} for split, keys in names.items()}
    numbers = {split: {k: float(v) for k, v in values.items()
                       if isinstance(v, (int, float)) and not isinstance(v, bool)}
               for split, values in found.items()}
    return {split: values for split, values in numbers.items() if values}


def version_card(candidate: str, evaluation: dict, decision: dict, meta: dict, tags: dict[str, str]) -> str:
    """A registered model version's description: which model, its numbers, the gate's decision and where it
    came from, in a few lines (the full card is model_card.md on the pipeline run)."""
    own = evaluation if candidate != "scratch" else {k.removeprefix("baseline_"): v for k, v in evaluation.items()}
    which = ("The from-scratch control (better than the fine-tuned model on validation)." if candidate == "scratch"
             else f"Fine-tuned model, recipe {meta.get('strategy') or 'n/a'}.")
    f1 = f"{own['test_macro_f1']:.3f}" if isinstance(own.get("test_macro_f1"), (int, float)) else "n/a"
    commit = tags.get("graft.git_commit", "unknown")
    dirty = " (uncommitted changes)" if tags.get("graft.git_dirty") == "true" else ""
    gate = "promoted to champion" if decision.get("promote") else "kept as challenger"
    lines = [
        which,
        "",
        f"- Target test set ({evaluation.get('test_examples', '?')} images): accuracy {_pct(own.get('test_acc'))}, "
        f"macro-F1 {f1}; validation accuracy {_pct(own.get('val_acc'))}",
        f"- Transfer gain (fine-tuned minus from scratch, test): {evaluation.get('transfer_gain', 'n/a')} points",
        f"- Gate: {gate} ({decision.get('reason', 'n/a')})",
        f"- Git commit {commit[:12]}{dirty}, raw data {tags.get('graft.data_hash', 'n/a')}, "
        f"params {tags.get('graft.params_hash', 'n/a')}",
        "- The full model card is model_card.md on the pipeline run",
    ]
    return "\n".join(lines) + "\n"


def registered_model_card(name: str) -> str:
    """The registered model's description: what its versions are and what its aliases mean."""
    return (f"Image classifiers trained by graft: a pretrained backbone with a new head, fine-tuned on the target "
            f"domain (or the from-scratch control, when that is better on validation). `challenger` is the newest "
            f"version; `champion` moves to a version only when it beats the current one on the same test examples "
            f"(McNemar's test) or by hand (`graft promote`). `graft lineage models:/{name}/<version>` shows the "
            f"commit, data and params behind a version.\n")


def _pct(v) -> str:
    return f"{100 * v:.1f}%" if isinstance(v, (int, float)) else "n/a"
