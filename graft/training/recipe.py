"""The loop's recipe: how a run trains. Its defaults are config's own (graft/config.py documents each
field), and recipe_from builds one from a stage's validated section, so there is one set of settings."""

from __future__ import annotations

from dataclasses import dataclass, field, fields

from graft.config import FinetuneParams, OptimParams, Params, TrainParams
from graft.training.augment import AugmentSpec


def _config_default(section: type, name: str):
    """A field's default as graft/config.py declares it: the one place defaults are written."""
    return section.model_fields[name].get_default(call_default_factory=True)


_OPTIM, _TRAIN, _FT = OptimParams, TrainParams, FinetuneParams


@dataclass
class Recipe:
    """Everything the loop needs to know about how to train. Built by the stages from their validated params
    (recipe_from, below, copies every OptimParams field by name); the defaults here are
    config's own, read from graft/config.py, which documents each field, so there is no second set.
    `strategy` is the loop's: which parts train (full, linear_probe, gradual_unfreeze); finetune's `auto`
    and `lp_ft` are chosen above the loop (graft/training/selection.py)."""

    epochs: int
    lr: float                        # the head's peak rate
    backbone_lr: float | None = None  # the backbone's (its top group's); None: the same as the head's
    optimizer: str = _config_default(_OPTIM, "optimizer")
    weight_decay: float = _config_default(_OPTIM, "weight_decay")
    momentum: float = _config_default(_OPTIM, "momentum")
    schedule: str = _config_default(_OPTIM, "schedule")
    warmup: float = _config_default(_OPTIM, "warmup")
    batch_size: int = _config_default(_TRAIN, "batch_size")
    eval_batch_size: int = _config_default(_TRAIN, "eval_batch_size")
    label_smoothing: float = _config_default(_OPTIM, "label_smoothing")
    grad_clip: float = _config_default(_OPTIM, "grad_clip")
    augment: AugmentSpec = field(default_factory=lambda: AugmentSpec(**_config_default(_OPTIM, "augment").model_dump()))
    strategy: str = "full"
    freeze_epochs: int = _config_default(_FT, "freeze_epochs")
    unfrozen_lr_factor: float = _config_default(_FT, "unfrozen_lr_factor")
    layer_decay: float = _config_default(_FT, "layer_decay")
    train_bn: bool = _config_default(_FT, "train_bn")
    keep: str = _config_default(_OPTIM, "keep")
    monitor: str = _config_default(_OPTIM, "monitor")
    patience: int = _config_default(_OPTIM, "patience")
    validate_every: int = _config_default(_OPTIM, "validate_every")
    ema_decay: float = _config_default(_OPTIM, "ema_decay")
    sync_bn: bool = _config_default(_TRAIN, "sync_bn")



def recipe_from(optim: OptimParams, params: Params, **overrides) -> Recipe:
    """The loop's recipe from a stage's section: every field of OptimParams (how a stage trains) by name,
    the batch sizes from `train`, then `overrides` (a rate the stage chooses, finetune's strategy settings).
    Nothing is copied by hand, so a new OptimParams field reaches the loop once Recipe has it."""
    recipe_fields = {f.name for f in fields(Recipe)}
    shared = {name: getattr(optim, name) for name in OptimParams.model_fields if name in recipe_fields}
    shared["augment"] = AugmentSpec(**optim.augment.model_dump())
    train = {name: getattr(params.train, name) for name in ("batch_size", "eval_batch_size", "sync_bn")}
    return Recipe(**{**shared, **train, **overrides})
