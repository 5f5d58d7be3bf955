"""evaluate: score the fine-tuned model and the from-scratch control on the same target test set, and say
which of the two is better on the validation set.

The choice between them (which one `register` ships) uses the validation split only: choosing on the
test split would make the reported test accuracy an optimistic one. When the control wins there,
pretraining did not pay on this data, and metrics/evaluate.json and the summary say "negative transfer".

metrics/evaluate.json (a DVC metric) holds the headline numbers only; precision, recall, F1 and support per
class, of both models, go to reports/evaluate_per_class.json (versioned as an output, but no DVC metric: a
column per class and number would crowd the headline out of `dvc exp show`) and to the MLflow run."""

from __future__ import annotations

import csv

from graft import plots, tracking
from graft.config import Params
from graft.console import say
from graft.contract import REL, Contract, Plot, model_files, rel
from graft.data.store import load_domain
from graft.files import write_json
from graft.metrics import classification_report, confusion_matrix
from graft.models.io import load_classifier
from graft.paths import Paths
from graft.training.loop import evaluate as score
from graft.training.loop import predict_logits
from graft.training.runtime import setup_torch

CONTRACT = Contract(
    order=70,
    params=("train", "evaluate"),
    deps=(model_files("finetuned")[0], model_files("baseline")[0], rel(REL.prepared("target")),
          *(rel(REL.plot(stage)) for stage in ("pretrain", "finetune", "baseline"))),  # the learning curves
    outs=(rel(REL.plots / "confusion.png"), rel(REL.plots / "learning_curves.png"),
          rel(REL.report("evaluate_per_class"))),
    metrics=(rel(REL.metric("evaluate")),),
    plots=(Plot(rel(REL.plot("confusion")), x="actual", y="predicted", template="confusion"),),
)


def better_on_validation(finetuned: dict, scratch: dict) -> str:
    """"finetuned" or "scratch": the higher validation accuracy, ties to the lower validation loss, and a
    tie in both to the fine-tuned model (what the pipeline is for)."""
    return "scratch" if (scratch["acc"], -scratch["loss"]) > (finetuned["acc"], -finetuned["loss"]) else "finetuned"


def verdict(better: str, finetuned: dict, scratch: dict) -> str:
    gain = 100 * (finetuned["acc"] - scratch["acc"])
    if finetuned["acc"] == scratch["acc"]:  # decided by the loss: "beats" or "+0.0 points" would mislead
        winner, loser = (scratch, finetuned) if better == "scratch" else (finetuned, scratch)
        lead = ("negative transfer: the from-scratch control" if better == "scratch"
                else "transfer pays only in loss: the fine-tuned model")
        return (f"{lead} ties on validation accuracy ({finetuned['acc']:.1%}) and has the lower validation loss "
                f"({winner['loss']:.3f} against {loser['loss']:.3f})")
    if better == "scratch":
        return (f"negative transfer: the from-scratch control beats the fine-tuned model on validation "
                f"({scratch['acc']:.1%} against {finetuned['acc']:.1%}); pretraining did not pay on this data")
    return f"transfer pays: the fine-tuned model leads the from-scratch control by {gain:+.1f} points on validation"


def rounded(report: dict) -> dict:
    """The report with every float, at any depth, to 6 decimals: files for people to read."""
    return {k: rounded(v) if isinstance(v, dict) else round(v, 6) if isinstance(v, float) else v
            for k, v in report.items()}


def run(params: Params, paths: Paths) -> dict:
    device = setup_torch(params)
    data, manifest = load_domain(paths, "target")
    test = data["test"]
    reports, predictions, validation = {}, {}, {}
    for name in ("finetuned", "baseline"):
        model, meta = load_classifier(paths.model(name))
        if meta["classes"] != test.classes:
            raise ValueError(f"{paths.model(name)} predicts {meta['classes']}, but the target test set has {test.classes}")
        validation[name] = score(model.to(device), data["val"], params.train.eval_batch_size, device)
        logits = predict_logits(model.to(device), test.images, params.train.eval_batch_size, device)
        reports[name] = classification_report(logits, test.labels, test.classes, params.evaluate.calibration_bins)
        predictions[name] = logits.argmax(1)

    ft, bl = reports["finetuned"], reports["baseline"]
    better = better_on_validation(validation["finetuned"], validation["baseline"])
    metrics = {
        "test_acc": ft["accuracy"], "test_macro_f1": ft["macro_f1"], "test_ece": ft["ece"],
        "baseline_test_acc": bl["accuracy"], "baseline_test_macro_f1": bl["macro_f1"],
        # Percentage points the pretrained backbone is worth over training from scratch.
        "transfer_gain": 100.0 * (ft["accuracy"] - bl["accuracy"]),
        "val_acc": validation["finetuned"]["acc"], "baseline_val_acc": validation["baseline"]["acc"],
        "val_transfer_gain": 100.0 * (validation["finetuned"]["acc"] - validation["baseline"]["acc"]),
        "better_on_val": better, "negative_transfer": better == "scratch",
        "verdict": verdict(better, validation["finetuned"], validation["baseline"]),
        "test_examples": len(test), "val_examples": len(data["val"]), "test_hash": manifest["hashes"]["test"],
    }
    write_json(paths.metric("evaluate"), rounded(metrics))
    per_class = rounded({"finetuned": ft["per_class"], "baseline": bl["per_class"]})
    write_json(paths.report("evaluate_per_class"), per_class)
    paths.plot("confusion").parent.mkdir(parents=True, exist_ok=True)
    with open(paths.plot("confusion"), "w", newline="") as f:  # one row per example: DVC's confusion template
        writer = csv.writer(f)
        writer.writerow(["actual", "predicted"])
        for actual, predicted in zip(test.labels.tolist(), predictions["finetuned"].tolist()):
            writer.writerow([test.classes[actual], test.classes[predicted]])
    tracking.log_dict(per_class, "per_class_report.json")
    pictures = [
        plots.confusion(confusion_matrix(test.labels, predictions["finetuned"], len(test.classes)).numpy(),
                        test.classes, paths.plots / "confusion.png",
                        title=f"fine-tuned, target test set\naccuracy {ft['accuracy']:.1%}"),
        plots.learning_curves({name: plots.read_history(paths.plot(name)) for name in ("pretrain", "finetune", "baseline")},
                              paths.plots / "learning_curves.png"),
    ]
    for picture in pictures:
        tracking.log_artifact(picture, "plots")
    say(f"evaluate: fine-tuned {ft['accuracy']:.3f}, from scratch {bl['accuracy']:.3f}, "
        f"transfer gain {metrics['transfer_gain']:+.1f} points on {len(test)} test images")
    say(f"evaluate: {metrics['verdict']}")
    return {k: v for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
