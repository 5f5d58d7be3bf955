"""finetune's strategies as runs of the loop, and `auto`: every candidate trained, the best on validation kept.

A strategy is one run of the loop (linear_probe, full, gradual_unfreeze), or two for lp_ft: a linear
probe, then everything trained from the probe's weights, every layer at the backbone's rate, with a
fresh optimizer (Kumar et al., 2022: the probe gives the backbone a head that no longer sends it
large random gradients). Runs are memoised by what they train, so `auto` with linear_probe and lp_ft
among its candidates trains the probe once.

The choice uses the validation split only: the best validation accuracy, ties to the lower
validation loss, remaining ties to the candidate listed first. The test split is never seen here.
Nothing here knows about MLflow: the stage passes in what to do around each candidate.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, replace

import torch

from graft.config import Params
from graft.data.dataset import ImageDataset
from graft.models.classifier import GraftClassifier
from graft.training.checkpoint import Checkpoint
from graft.training.loop import EpochCallback, FitResult, fit
from graft.training.recipe import Recipe, recipe_from
from graft.training.strategies import resolve_rates


@dataclass(frozen=True)
class Step:
    """One run of the loop: `label` names it (checkpoints, seeds, messages), `recipe` says how it trains."""

    label: str
    recipe: Recipe


def steps_for(strategy: str, base: Recipe, lr: float | str, backbone_lr: float | str) -> list[Step]:
    """The runs of the loop that `strategy` takes, at its rates (`auto` picks the strategy's defaults)."""
    head, backbone = resolve_rates(strategy, lr, backbone_lr)
    if strategy == "lp_ft":
        return [Step("linear_probe", replace(base, strategy="linear_probe", lr=head, backbone_lr=head)),
                Step("lp_ft", replace(base, strategy="full", lr=backbone, backbone_lr=backbone))]
    return [Step(strategy, replace(base, strategy=strategy, lr=head, backbone_lr=backbone))]


@dataclass
class Candidate:
    name: str
    history: list[dict]          # every epoch of every step, numbered on from one step to the next
    kept_epoch: int
    stopped_early: bool
    state: dict[str, torch.Tensor]  # the kept weights, on the CPU
    seconds: float
    head_lr: float
    backbone_lr: float

    @property
    def kept(self) -> dict:
        return next(r for r in self.history if r["epoch"] == self.kept_epoch)

    @property
    def score(self) -> tuple[float, float]:
        return self.kept["val_acc"], -self.kept["val_loss"]

    def summary(self) -> dict:
        """What metrics/finetune.json keeps: deterministic numbers only (no timings), so reruns compare equal."""
        kept = self.kept
        return {"val_acc": kept["val_acc"], "val_loss": kept["val_loss"], "train_acc": kept["train_acc"],
                "epochs": len(self.history), "kept_epoch": self.kept_epoch, "head_lr": self.head_lr,
                "backbone_lr": self.backbone_lr}


@dataclass
class Selection:
    chosen: Candidate
    candidates: list[Candidate]
    reason: str


@dataclass
class _Done:
    result: FitResult
    state: dict[str, torch.Tensor]
    seconds: float


CheckpointFor = Callable[[Step], Checkpoint | None]
CandidateScope = Callable[[str, dict], AbstractContextManager]



def candidate_strategies(params: Params) -> list[str]:
    """The strategies this run trains: the candidates under auto, else the one named."""
    fp = params.finetune
    return list(fp.candidates) if fp.strategy == "auto" else [fp.strategy]


def finetune_recipe(params: Params, strategy: str | None = None) -> Recipe:
    """The loop's recipe for `strategy` (default: the configured one, or auto's first candidate) at its rates;
    for lp_ft, the recipe of its first run (the probe)."""
    fp = params.finetune
    strategy = strategy or candidate_strategies(params)[0]
    # The rates come from steps_for (the strategy's, or the ones params name); 1.0 is only a placeholder here.
    base = replace(recipe_from(fp, params, lr=1.0), freeze_epochs=fp.freeze_epochs,
                   unfrozen_lr_factor=fp.unfrozen_lr_factor, layer_decay=fp.layer_decay, train_bn=fp.train_bn)
    return steps_for(strategy, base, fp.lr, fp.backbone_lr)[0].recipe


def select(make_model: Callable[[], GraftClassifier], train: ImageDataset, val: ImageDataset, base: Recipe,
           strategies: list[str], lr: float | str, backbone_lr: float | str, *, seed: int, stage: str,
           device: torch.device, on_epoch: EpochCallback | None = None, checkpoint_for: CheckpointFor | None = None,
           scope: CandidateScope | None = None) -> Selection:
    """Train each strategy from `make_model()` and keep the best by validation score.

    `scope(name, info)` wraps each candidate (the stage opens a nested tracking run there); `on_epoch`
    gets every epoch row of the candidate being trained, including the replayed rows of a memoised step."""
    done: dict[tuple[str, str], _Done] = {}
    candidates = []
    for name in strategies:
        steps = steps_for(name, base, lr, backbone_lr)
        final = steps[-1].recipe
        info = {"strategy": name, "head_lr": final.lr, "backbone_lr": final.backbone_lr}
        with scope(name, info) if scope is not None else nullcontext():
            candidates.append(_train_candidate(name, steps, done, make_model, train, val, seed=seed, stage=stage,
                                               device=device, on_epoch=on_epoch, checkpoint_for=checkpoint_for))
    chosen = choose(candidates)
    return Selection(chosen, candidates, _reason(chosen, candidates))


def choose(candidates: list[Candidate]) -> Candidate:
    """The best validation accuracy, ties to the lower validation loss, then to the one listed first."""
    return max(candidates, key=lambda c: c.score)  # max keeps the first of equal scores


def _train_candidate(name: str, steps: list[Step], done: dict[tuple[str, str], _Done], make_model, train, val, *, seed: int,
                     stage: str, device: torch.device, on_epoch: EpochCallback | None,
                     checkpoint_for: CheckpointFor | None) -> Candidate:
    history: list[dict] = []
    seconds, kept_epoch, stopped_early, state = 0.0, 0, False, None
    for step in steps:
        offset = len(history)
        key = (step.label, repr(step.recipe))  # the same run of the loop, whichever candidate asks for it

        def shifted(row: dict, offset: int = offset) -> None:
            if on_epoch is not None:
                on_epoch({**row, "epoch": row["epoch"] + offset})

        if key not in done:
            model = make_model()
            if state is not None:  # a later step starts where the one before it ended
                model.load_state_dict(state)
            start = time.perf_counter()
            result = fit(model, train, val, step.recipe, seed=seed, stage=f"{stage}.{step.label}", device=device,
                         on_epoch=shifted, checkpoint=checkpoint_for(step) if checkpoint_for else None)
            done[key] = _Done(result, {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
                               time.perf_counter() - start)
        else:
            for row in done[key].result.history:  # this candidate's own record shows the shared epochs too
                shifted(row)
        run = done[key]
        history += [{**row, "epoch": row["epoch"] + offset} for row in run.result.history]
        kept_epoch, stopped_early = run.result.kept_epoch + offset, run.result.stopped_early
        state, seconds = run.state, seconds + run.seconds
    final = steps[-1].recipe
    return Candidate(name, history, kept_epoch, stopped_early, state, seconds, final.lr,
                     final.backbone_lr if final.backbone_lr is not None else final.lr)


def _reason(chosen: Candidate, candidates: list[Candidate]) -> str:
    if len(candidates) == 1:
        return f"{chosen.name} was the only strategy asked for"
    others = [c for c in candidates if c is not chosen]
    acc = chosen.kept["val_acc"]
    scores = ", ".join(f"{c.name} {c.kept['val_acc']:.1%}" for c in others)
    tied = [c.name for c in others if c.kept["val_acc"] == acc]
    if tied:
        return (f"{chosen.name} had the best validation accuracy ({acc:.1%}; {scores}), tied with "
                f"{' and '.join(tied)} and kept for its lower validation loss ({chosen.kept['val_loss']:.3f})")
    return f"{chosen.name} had the best validation accuracy ({acc:.1%}; {scores})"


def fresh_copies(model: GraftClassifier) -> Callable[[], GraftClassifier]:
    """A factory of independent copies of `model` as it is now (each candidate starts from the same weights)."""
    pristine = copy.deepcopy(model)
    return lambda: copy.deepcopy(pristine)
