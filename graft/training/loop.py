"""The training loop: for each epoch, set the phase (what is frozen), then per batch: augment, set the
learning rate, forward, loss, backward, clip, step, average; then validate, keep the best, checkpoint,
report.

Batches come from batches.py: uint8 tensors already in memory (the model normalises on the fly, so the
only per-image work is the optional augmentation), or a split streamed from shards, decoded and augmented
by DataLoader workers; the loop cannot tell them apart. Nothing inside a step reads a value back from the device: the epoch's
loss and accuracy accumulate there and are read once per epoch (device.py has the CUDA specifics).
Under torchrun the same loop trains one shard per process (distributed.py says how).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from graft.console import say
from graft.data.dataset import ImageDataset
from graft.models.classifier import GraftClassifier
from graft.models.surgery import apply_bn_policy, trainable_parameter_count
from graft.seeding import generator
from graft.training import distributed
from graft.training.batches import Batch, TrainBatches, batches_for
from graft.training.checkpoint import Checkpoint
from graft.training.device import Placement, placement_for, release_layout
from graft.training.distributed import World
from graft.training.ema import WeightEma
from graft.training.progress import EpochProgress
from graft.training.recipe import Recipe
from graft.training.schedules import lr_factor
from graft.training.strategies import Phase, apply_phase, group_rates, make_optimizer, phase_of, plan_phases, set_rates


@dataclass
class FitResult:
    history: list[dict]
    kept_epoch: int          # the epoch whose weights the model holds on return
    stopped_early: bool
    resumed_after: int = 0   # epochs restored from a checkpoint (0: a fresh run)

    @property
    def kept(self) -> dict:
        return next(r for r in self.history if r["epoch"] == self.kept_epoch)


@torch.inference_mode()
def predict_logits(model: nn.Module, images: torch.Tensor, batch_size: int,
                   device: torch.device | Placement) -> torch.Tensor:
    place = device if isinstance(device, Placement) else Placement(device)
    model.eval()
    out = []
    for i in range(0, len(images), batch_size):
        with place.autocast():
            out.append(model(place.batch(images[i:i + batch_size])).float().cpu())
    return torch.cat(out) if out else torch.empty(0)


def evaluate(model: nn.Module, ds, batch_size: int, device: torch.device | Placement) -> dict[str, float]:
    """Loss and accuracy on `ds`: an ImageDataset, or a streamed split (read in order, not augmented)."""
    if isinstance(ds, ImageDataset):
        logits, labels = predict_logits(model, ds.images, batch_size, device), ds.labels
    else:
        logits, labels = _predict_streamed(model, ds, batch_size, device)
    return {"loss": F.cross_entropy(logits, labels).item(),
            "acc": (logits.argmax(1) == labels).float().mean().item()}


@torch.inference_mode()
def _predict_streamed(model: nn.Module, split, batch_size: int,
                      device: torch.device | Placement) -> tuple[torch.Tensor, torch.Tensor]:
    place = device if isinstance(device, Placement) else Placement(device)
    model.eval()
    out, labels = [], []
    for x, y in split.ordered_batches(batch_size):
        with place.autocast():
            out.append(model(place.batch(x)).float().cpu())
        labels.append(y)
    return torch.cat(out), torch.cat(labels)


EpochCallback = Callable[[dict], None]


def _improves(row: dict, best: dict | None, monitor: str) -> bool:
    if best is None:
        return True
    if monitor == "val_loss":
        return row["val_loss"] < best["val_loss"]
    # On a small validation set accuracy ties often; the lower loss breaks them.
    return (row["val_acc"], -row["val_loss"]) > (best["val_acc"], -best["val_loss"])


def _clone(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone().cpu() for k, v in state.items()}


@dataclass
class _Progress:
    """What carries over from epoch to epoch, and into a checkpoint."""

    history: list[dict] = field(default_factory=list)
    best: dict | None = None                       # {"epoch", "val_acc", "val_loss"}
    best_state: dict[str, torch.Tensor] | None = None
    bad_epochs: int = 0


def _train_epoch(model: GraftClassifier, net: nn.Module, batches: Iterable[Batch], optimizer: torch.optim.Optimizer,
                 recipe: Recipe, phase: Phase, first_step: int, phase_steps: int, ema: WeightEma | None,
                 place: Placement, world: World, shown: EpochProgress | None) -> tuple[dict, dict]:
    """One pass over this process's batches of the epoch; `net` is `model`, or DDP around it."""
    rates: dict[str, float] = {}
    head_peak = recipe.lr * phase.lr_scale
    backbone_peak = (recipe.backbone_lr if recipe.backbone_lr is not None else recipe.lr) * phase.lr_scale
    # Summed in float64 from each batch's mean loss × its size: the same numbers .item() per step gave.
    loss_sum = torch.zeros((), dtype=torch.float64, device=place.device)
    correct = torch.zeros((), dtype=torch.int64, device=place.device)
    seen, start = 0, time.perf_counter()
    for step, (x, y) in enumerate(batches, start=first_step):
        n = len(y)
        x, y = place.batch(x), place.batch(y)
        factor = lr_factor(recipe.schedule, step, phase_steps, recipe.warmup)
        set_rates(optimizer, head_peak, backbone_peak, factor)
        if not rates:
            rates = group_rates(optimizer)  # the rates the epoch starts with, as logged
        with place.autocast():
            logits = net(x)
            loss = F.cross_entropy(logits, y, label_smoothing=recipe.label_smoothing)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if recipe.grad_clip:
            nn.utils.clip_grad_norm_(model.parameters(), recipe.grad_clip)
        optimizer.step()
        if ema is not None:
            ema.update(model)
        loss_sum += loss.detach().double() * n
        correct += (logits.argmax(1) == y).sum()
        seen += n
        if shown is not None:
            shown.step(seen, loss_sum, correct)
    if world.distributed:
        total = torch.tensor(seen, device=place.device)
        loss_sum, correct, total = distributed.sum_across(loss_sum, correct, total, world=world)
        seen = int(total.item())
    train_loss, train_acc = loss_sum.item() / seen, correct.item() / seen  # waits for the device's last step
    elapsed = time.perf_counter() - start
    return {"train_loss": train_loss, "train_acc": train_acc,
            "images_per_sec": seen / elapsed if elapsed > 0 else 0.0}, rates


@dataclass
class _Setup:
    """What every epoch of one fit uses."""

    world: World
    place: Placement
    phases: list[Phase]
    optimizer: torch.optim.Optimizer
    ema: WeightEma | None
    batches: TrainBatches   # its images_per_epoch: this process's share of an epoch
    steps_per_epoch: int


def _set_up(model: GraftClassifier, train, recipe: Recipe, seed: int, stage: str,
            device: torch.device) -> tuple[GraftClassifier, _Setup]:
    world = distributed.current_world()
    model, not_synced = distributed.sync_batchnorm(model, world, device, recipe.sync_bn)
    if not_synced and world.primary:
        say(f"{stage}: {not_synced}")
    place = placement_for(model, device)
    place.place(model)
    batch_size = distributed.local_batch(recipe.batch_size, world)
    batches = batches_for(train, recipe.augment, seed=seed, stage=stage, world=world, batch_size=batch_size)
    return model, _Setup(
        world, place, plan_phases(recipe.strategy, recipe.epochs, recipe.freeze_epochs, recipe.unfrozen_lr_factor),
        make_optimizer(model, recipe.optimizer, recipe.weight_decay, recipe.momentum, recipe.layer_decay),
        WeightEma(model, recipe.ema_decay) if recipe.ema_decay else None,
        batches, math.ceil(batches.images_per_epoch / batch_size))


def fit(model: GraftClassifier, train, val, recipe: Recipe, *, seed: int, stage: str,
        device: torch.device, on_epoch: EpochCallback | None = None,
        checkpoint: Checkpoint | None = None) -> FitResult:
    """Train `model` in place by `recipe`. On return the model holds the kept weights (the best epoch's
    with keep: best, else the last epoch's, or their moving average with ema_decay).
    `train` and `val` are ImageDatasets, or splits streamed from shards (graft.data.streaming)."""
    if len(train) == 0:
        raise ValueError(f"{stage}: the training set is empty")
    model, run = _set_up(model, train, recipe, seed, stage, device)
    world = run.world
    progress = _Progress()
    resumed_after = 0
    saved = _load_checkpoint(checkpoint, world, device)
    if saved is not None:
        resumed_after = _restore(saved, model, run.optimizer, run.ema, progress, run.phases)
        if on_epoch is not None and world.primary:
            for row in progress.history:  # the new tracking run gets the whole history
                on_epoch(row)

    stopped_early = bool(saved and saved["stopped_early"])
    last_epoch = resumed_after if stopped_early else recipe.epochs
    net, wrapped_phase = model, None
    for epoch in range(resumed_after + 1, last_epoch + 1):
        phase, epochs_into_phase = phase_of(run.phases, epoch)
        apply_phase(model, phase)
        if phase != wrapped_phase:  # DDP tracks the parameters that train when it is built
            net = model  # the last phase's DDP goes first: its gradient hooks must not fire in this phase
            net, wrapped_phase = distributed.wrap(model, world, device), phase
        model.train()
        apply_bn_policy(model, recipe.train_bn)
        # Seeded by (seed, stage, epoch): the same draws whether or not earlier epochs ran in this process.
        # Process 0 draws what a single process draws; the others their own (augmentation, dropout).
        torch.manual_seed(generator(seed, stage, "epoch", epoch, *([world.rank] if world.rank else [])).initial_seed())
        shown = EpochProgress(f"{stage}: epoch {epoch}/{recipe.epochs}", run.batches.images_per_epoch) if world.primary else None
        stats, rates = _train_epoch(model, net, run.batches.epoch(epoch), run.optimizer, recipe, phase,
                                    epochs_into_phase * run.steps_per_epoch, phase.epochs * run.steps_per_epoch,
                                    run.ema, run.place, world, shown)
        if shown is not None:
            shown.close()
        validates = epoch % recipe.validate_every == 0 or epoch == recipe.epochs
        row = _score_epoch(model, val if validates else None, recipe, run, epoch, phase, stats, rates, progress,
                           device)
        if world.primary:
            scores = (f"val loss {row['val_loss']:.3f} acc {row['val_acc']:.3f}" if validates else
                      f"(validated every {recipe.validate_every} epochs)")
            say(f"{stage}: epoch {epoch}/{recipe.epochs}{' (frozen backbone)' if not phase.train_backbone else ''}  "
                f"train loss {row['train_loss']:.3f} acc {row['train_acc']:.3f}  "
                f"{scores}  {row['images_per_sec']:.0f} img/s")
        # Early stopping only in the last phase (a frozen warm-up is not a plateau), after a validation.
        stopped_early = (bool(recipe.patience) and validates and progress.bad_epochs >= recipe.patience
                         and phase is run.phases[-1])
        if checkpoint is not None and world.primary:
            checkpoint.save(_snapshot(epoch, phase, model, run.optimizer, run.ema, progress, stopped_early))
        if on_epoch is not None and world.primary:
            on_epoch(row)
        if stopped_early:
            if world.primary:
                say(f"{stage}: stopping early: {recipe.monitor} has not improved for {recipe.patience} epochs")
            break
    kept_epoch = _keep(model, progress, recipe, run.ema)
    return FitResult(progress.history, kept_epoch, stopped_early, resumed_after)


def _score_epoch(model: GraftClassifier, val, recipe: Recipe, run: _Setup, epoch: int, phase: Phase,
                 stats: dict, rates: dict, progress: _Progress, device: torch.device) -> dict:
    """Validate the epoch's weights (the moving average's, with ema_decay), add its row to the history and
    remember it if it is the best so far. With `val` None (an epoch validate_every skips) the row has no
    validation figures (None) and the best and the epochs without improvement stay as they were."""
    row = {"epoch": epoch, "train_loss": stats["train_loss"], "train_acc": stats["train_acc"],
           "val_loss": None, "val_acc": None,
           "images_per_sec": stats["images_per_sec"], "trainable_params": trainable_parameter_count(model),
           "phase": int(phase.train_backbone), **rates}
    progress.history.append(row)
    if val is None:
        return row
    scored = run.ema.module if run.ema is not None else model
    distributed.sync_buffers(scored, run.world)
    val_metrics = evaluate(scored, val, recipe.eval_batch_size, run.place)
    # Every process decides keep-best and early stopping on the primary's figures.
    row["val_loss"], row["val_acc"] = distributed.from_primary(
        [val_metrics["loss"], val_metrics["acc"]], run.world, device)
    if _improves(row, progress.best, recipe.monitor):
        progress.best = {"epoch": epoch, "val_acc": row["val_acc"], "val_loss": row["val_loss"]}
        progress.bad_epochs = 0
        if recipe.keep == "best":
            progress.best_state = _clone(scored.state_dict())
    else:
        # Epochs since the best, counting those not validated: patience stays a number of epochs.
        progress.bad_epochs = epoch - progress.best["epoch"]
    return row


def _keep(model: GraftClassifier, progress: _Progress, recipe: Recipe, ema: WeightEma | None) -> int:
    """Load the weights the recipe keeps into `model` (a plain, fully trainable one); returns their epoch."""
    kept_epoch = progress.history[-1]["epoch"]
    if recipe.keep == "best" and progress.best_state is not None:
        model.load_state_dict(progress.best_state)
        kept_epoch = progress.best["epoch"]
    elif ema is not None:
        model.load_state_dict(ema.module.state_dict())
    apply_phase(model, Phase(0, 1, True))
    release_layout(model)
    return kept_epoch


def _load_checkpoint(checkpoint: Checkpoint | None, world: World, device: torch.device) -> dict | None:
    """The primary loads (and clears out stale checkpoints) first; then the others read the same file."""
    if checkpoint is None:
        return None
    saved = checkpoint.load() if world.primary else None
    distributed.barrier(world)
    if not world.primary:
        saved = checkpoint.read()
    epoch = saved["epoch"] if saved else 0
    if int(distributed.from_primary([epoch], world, device)[0]) != epoch:
        raise RuntimeError(f"process {world.rank} read another checkpoint than process 0 in {checkpoint.folder}")
    return saved


def _snapshot(epoch: int, phase: Phase, model: nn.Module, optimizer: torch.optim.Optimizer,
              ema: WeightEma | None, progress: _Progress, stopped_early: bool) -> dict:
    """Everything a resumed run needs to continue as if never stopped. The learning rate is a pure
    function of the step (schedules.py), so there is no scheduler state to keep."""
    return {"epoch": epoch, "phase": phase.index, "train_backbone": phase.train_backbone,
            "model": model.state_dict(), "optimizer": optimizer.state_dict(),
            "ema": ema.state_dict() if ema is not None else None,
            "history": progress.history, "best": progress.best, "best_state": progress.best_state,
            "bad_epochs": progress.bad_epochs, "stopped_early": stopped_early, "rng": torch.get_rng_state()}


def _restore(saved: dict, model: GraftClassifier, optimizer: torch.optim.Optimizer, ema: WeightEma | None,
             progress: _Progress, phases: list[Phase]) -> int:
    """Load a snapshot; returns the epoch it was taken after."""
    epoch = int(saved["epoch"])
    phase, _ = phase_of(phases, epoch)
    if phase.index != saved["phase"]:
        raise ValueError(f"checkpoint after epoch {epoch} is in phase {saved['phase']}, but the recipe puts that "
                         f"epoch in phase {phase.index}; delete it to start over")
    apply_phase(model, phase)  # the freeze state the run was in: unfrozen stays unfrozen
    model.load_state_dict(saved["model"])
    optimizer.load_state_dict(saved["optimizer"])
    if ema is not None and saved["ema"] is not None:
        ema.load_state_dict(saved["ema"])
    progress.history = list(saved["history"])
    progress.best, progress.best_state = saved["best"], saved["best_state"]
    progress.bad_epochs = int(saved["bad_epochs"])
    torch.set_rng_state(saved["rng"])
    return epoch
