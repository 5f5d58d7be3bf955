"""Benchmark of the fine-tuning strategies: a script that prints figures, not a test.

On the default data (params.yaml), for each seed: ingest and pretrain once, then for each label
budget (labels_per_class) prepare the target split, graft the head, run every variant below through
the finetune stage and the from-scratch control through the baseline stage, and score each on the
target test split. The stage functions run in a temporary folder; no Prefect, MLflow or DVC.

    nice -n 10 .venv/bin/python bench/finetune.py                    # 3 seeds × budgets 5, 20, 100
    .venv/bin/python bench/finetune.py --seeds 0 --budgets 10 --variants full gradual_unfreeze

The target source is raised to labels + validation + test images per class for the largest
budget, so the test split is the same at every budget. Prints mean test accuracy ± std over seeds
and the mean seconds each fine-tuning run took.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from contextlib import redirect_stdout
from io import StringIO
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from graft.config import Params, validate_params
from graft.paths import Paths

AUG = {"crop_padding": 4, "flip": True, "trivial_augment": False}

# The datasets every default is checked on (no default is chosen on one): graft's built-in synthetic set;
# the same generator with a target drawn in a style the source never shows; and real handwritten digits
# (scikit-learn's bundled set: 0-4 pretrain, 5-9 are the target, 100 test images per class).
DATASETS: dict[str, dict] = {
    "synthetic": {},
    "shifted": {"ingest": {"target": {"style": "shifted"}}},
    "digits": {"data": {"channels": 1}, "ingest": {"source": {"kind": "sklearn_digits"},
                                                   "target": {"kind": "sklearn_digits"}},
               "prepare": {"target_test_per_class": 100}},
}

# name -> finetune overrides on top of params.yaml: every strategy at its default rates (lr and backbone_lr
# auto), so the table shows what a user gets by naming the strategy.
VARIANTS: dict[str, dict] = {
    "auto": {"strategy": "auto"},
    "linear_probe": {"strategy": "linear_probe"},
    "lp_ft": {"strategy": "lp_ft"},
    "full": {"strategy": "full"},
    "gradual_unfreeze": {"strategy": "gradual_unfreeze", "freeze_epochs": 10},
    "full+aug": {"strategy": "full", "augment": AUG},
}
# The control trains like finetune with each of these recipes (dvc.yaml: baseline reads finetune's recipe).
CONTROLS: dict[str, dict] = {"scratch": {}, "scratch+aug": {"augment": AUG}}


def merge(base: dict, extra: dict) -> dict:
    out = dict(base)
    for k, v in extra.items():
        out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def params_for(raw: dict, seed: int, budget: int, per_class: int, finetune: dict | None = None) -> Params:
    changes = {"seed": seed, "data": {"labels_per_class": budget}, "finetune": finetune or {}}
    if raw["ingest"]["target"].get("kind", "synthetic") == "synthetic":
        changes["ingest"] = {"target": {"per_class": per_class}}
    return validate_params(merge(raw, changes))


def test_accuracy(paths: Paths, name: str, params: Params) -> float:
    from graft.data.store import load_domain
    from graft.models.io import load_classifier
    from graft.training.loop import evaluate
    from graft.training.runtime import setup_torch

    device = setup_torch(params)
    data, _ = load_domain(paths, "target")
    model, _ = load_classifier(paths.model(name))
    return evaluate(model.to(device), data["test"], params.train.eval_batch_size, device)["acc"]


def quietly(fn, *args, **kwargs):
    """The stages print a line per epoch; the benchmark prints its own summary."""
    with redirect_stdout(StringIO()):
        return fn(*args, **kwargs)


def pretrained(paths: Paths, params: Params) -> None:
    """Ingest, prepare and pretrain into `paths`, unless a previous run there used the same params."""
    from graft.config import section_hash
    from graft.stages import ingest, prepare, pretrain

    stamp = paths.root / ".bench-pretrained"
    key = section_hash(params, ["seed", "data.image_size", "data.channels", "model", "train", "ingest", "prepare",
                                "pretrain"])
    if stamp.exists() and stamp.read_text() == key:
        print(f"seed {params.seed}: reusing the pretrained backbone in {paths.root}", flush=True)
        return
    quietly(ingest.run, params, paths)
    quietly(prepare.run, params, paths)
    start = time.perf_counter()
    source = quietly(pretrain.run, params, paths)
    stamp.write_text(key)
    print(f"seed {params.seed}: pretrained in {time.perf_counter() - start:.0f}s, "
          f"source test accuracy {source['source_test_acc']:.3f}", flush=True)


def run(dataset: str, seeds: list[int], budgets: list[int], variants: list[str], controls: list[str],
        workdir: Path | None = None) -> dict:
    """{(name, budget): [{"test", "val", "val_loss", "seconds", "chosen"} per seed]}; "shipped" is what
    graft registers: the better of "auto" and "scratch" on validation (never on test)."""
    from graft.files import read_json
    from graft.stages import baseline, finetune, prepare, replace_head

    raw = merge(yaml.safe_load((REPO / "params.yaml").read_text()), DATASETS[dataset])
    for spec in raw["ingest"]["source"], raw["ingest"]["target"]:
        if spec["kind"] != "synthetic":  # a kind of its own: the synthetic keys params.yaml ships do not apply
            spec.pop("per_class", None)
    per_class = max(budgets) + raw["prepare"]["target_val_per_class"] + raw["prepare"]["target_test_per_class"]
    per_class = max(per_class, raw["ingest"]["target"].get("per_class", 0))
    results: dict[tuple[str, int], list[dict]] = {}
    for seed in seeds:
        with tempfile.TemporaryDirectory(prefix="graft-bench-") as tmp:
            paths = Paths.at(workdir / dataset / f"seed{seed}" if workdir else tmp)
            pretrained(paths, params_for(raw, seed, budgets[0], per_class))
            for budget in budgets:
                params = params_for(raw, seed, budget, per_class)
                quietly(prepare.run, params, paths)
                quietly(replace_head.run, params, paths)
                runs = [(name, VARIANTS[name], finetune, "finetuned", "finetune") for name in variants]
                runs += [(name, CONTROLS[name], baseline, "baseline", "baseline") for name in controls]
                for name, overrides, stage, output, metric in runs:
                    params = params_for(raw, seed, budget, per_class, overrides)
                    start = time.perf_counter()
                    quietly(stage.run, params, paths)
                    seconds = time.perf_counter() - start
                    written = read_json(paths.metric(metric))
                    row = {"test": test_accuracy(paths, output, params), "val": written["val_acc"],
                           "val_loss": written["val_loss"], "seconds": seconds, "chosen": written.get("chosen")}
                    results.setdefault((name, budget), []).append(row)
                    print(f"  {dataset} seed {seed} budget {budget:>3} {name:<18} test {row['test']:.3f} "
                          f"val {row['val']:.3f} {seconds:5.1f}s {row['chosen'] or ''}", flush=True)
                if "auto" in variants and "scratch" in controls:
                    from graft.stages.evaluate import better_on_validation

                    auto, scratch = results[("auto", budget)][-1], results[("scratch", budget)][-1]
                    better = better_on_validation({"acc": auto["val"], "loss": auto["val_loss"]},
                                                  {"acc": scratch["val"], "loss": scratch["val_loss"]})
                    results.setdefault(("shipped", budget), []).append(
                        {**(auto if better == "finetuned" else scratch), "chosen": better})
    return results


def table(results: dict, budgets: list[int], names: list[str]) -> str:
    # The median time: a busy machine slows a few runs down a lot, and the mean would show that instead.
    head = ("| variant | " + " | ".join(f"{b} labels/class" for b in budgets)
            + f" | median s per run ({'/'.join(map(str, budgets))}) |")
    lines = [head, "|" + "---|" * (len(budgets) + 2)]
    for name in names:
        cells, times = [], []
        for b in budgets:
            runs = results[(name, b)]
            accs = [100 * r["test"] for r in runs]
            spread = statistics.stdev(accs) if len(accs) > 1 else 0.0
            cells.append(f"{statistics.mean(accs):.1f} ± {spread:.1f}")
            times.append(f"{statistics.median(r['seconds'] for r in runs):.1f}")
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {' / '.join(times)} |")
    return "\n".join(lines)


def throughput(images: int = 4096, epochs: int = 3) -> str:
    """Training images per second of the default model (tiny_cnn, width 32, 32×32) with each augmentation
    setting, at params.yaml's thread count; the best of a few epochs, as a table."""
    import torch

    from graft.data.synthetic import default_classes, generate
    from graft.models.backbones import create_backbone
    from graft.models.classifier import GraftClassifier
    from graft.training.augment import AugmentSpec
    from graft.training.loop import fit
    from graft.training.recipe import Recipe

    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    torch.set_num_threads(raw["train"]["threads"])
    classes = default_classes("source")
    data = generate(classes, images // len(classes), 32, 3, seed=0)
    settings = {"none": AugmentSpec(), "crop + flip": AugmentSpec(crop_padding=4, flip=True),
                "crop + flip + TrivialAugment": AugmentSpec(crop_padding=4, flip=True, trivial_augment=True)}
    lines = [f"| augmentation | training img/s ({raw['train']['threads']} threads) |", "|---|---|"]
    for name, spec in settings.items():
        torch.manual_seed(0)
        model = GraftClassifier(create_backbone("tiny_cnn", 3, 32, width=32), len(classes))
        recipe = Recipe(epochs=epochs, lr=1e-3, batch_size=raw["train"]["batch_size"], augment=spec)
        history = quietly(fit, model, data, data, recipe, seed=0, stage="bench", device=torch.device("cpu")).history
        lines.append(f"| {name} | {max(r['images_per_sec'] for r in history):.0f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--budgets", type=int, nargs="+", default=[5, 10, 50])
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=list(DATASETS))
    parser.add_argument("--json", type=Path, default=None, help="also write every run's figures here")
    parser.add_argument("--variants", nargs="*", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--controls", nargs="*", default=list(CONTROLS), choices=list(CONTROLS))
    parser.add_argument("--workdir", type=Path, default=None,
                        help="keep each seed's data and pretrained backbone here and reuse them on the next run "
                             "(default: a temporary folder)")
    parser.add_argument("--try", dest="extra", nargs=2, action="append", default=[], metavar=("NAME", "JSON"),
                        help='an extra variant, e.g. --try sgd \'{"optimizer": "sgd", "lr": 0.01}\' (repeatable)')
    parser.add_argument("--throughput", action="store_true",
                        help="only measure training throughput with each augmentation setting")
    args = parser.parse_args(argv)
    if args.throughput:
        print(throughput())
        return 0
    for name, overrides in args.extra:
        VARIANTS[name] = json.loads(overrides)
        args.variants.append(name)
    everything = {}
    for dataset in args.datasets:
        start = time.perf_counter()
        results = run(dataset, args.seeds, args.budgets, args.variants, args.controls, args.workdir)
        names = args.variants + args.controls + (["shipped"] if ("shipped", args.budgets[0]) in results else [])
        print(f"\n{dataset}: mean test accuracy (%) ± std over seeds {args.seeds}; "
              f"{time.perf_counter() - start:.0f}s in all\n")
        print(table(results, args.budgets, names), flush=True)
        everything[dataset] = {f"{name} {budget}": runs for (name, budget), runs in results.items()}
        if args.json:
            args.json.write_text(json.dumps(everything, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
