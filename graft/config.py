"""params.yaml: the typed schema, loading with clear errors, and DVC-style `-S key=value` overrides.

Every field is documented where it is declared. The file is validated once, before any work
starts; unknown keys are rejected with a "did you mean" suggestion.
"""

from __future__ import annotations

import difflib
import re
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, Union, get_args

import yaml
from graft.errors import GraftError
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, field_validator, model_validator


class ConfigError(GraftError, ValueError):
    """params.yaml (or an override) is invalid; the message names each key, value and what is allowed."""


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_default=True)


# ---------------------------------------------------------------- shared sections

class DataParams(Section):
    image_size: int = Field(32, ge=8, le=512, description="Images are resized to image_size×image_size.")
    channels: Literal[1, 3] = Field(3, description="1 (grey) or 3 (RGB); sources are converted.")
    labels_per_class: int = Field(10, ge=1, description="Label budget: target training images per class.")


class HeadParams(Section):
    kind: Literal["linear", "mlp"] = Field("linear", description="linear, or mlp as in fastai's create_head.")
    hidden: list[Annotated[int, Field(ge=1)]] = Field(default_factory=lambda: [256], description="mlp hidden sizes.")
    dropout: float = Field(0.0, ge=0.0, lt=1.0, description="Dropout before each linear layer of the head.")
    batchnorm: bool = Field(False, description="BatchNorm1d before each linear layer of an mlp head.")


# Each backbone and the options its factory takes besides in_channels and image_size. Kept here rather than
# read from the registry so that loading params never imports torch (`graft run` with nothing stale must stay
# fast); tests/test_config.py checks names and options against the registry and the factories' signatures.
# A torchvision backbone takes adapt_stem plus the builder's options that YAML can write: not norm_layer or
# block (callables), nor num_classes or dropout (only the classifier uses them, and graft removes it).
_RESNET_OPTIONS = ("adapt_stem", "zero_init_residual", "groups", "width_per_group", "replace_stride_with_dilation")
_MOBILENET_V3_OPTIONS = ("adapt_stem", "width_mult", "reduced_tail", "dilated")
BACKBONE_OPTIONS: dict[str, tuple[str, ...]] = {
    "tiny_cnn": ("width",),
    "resnet18": _RESNET_OPTIONS,
    "resnet34": _RESNET_OPTIONS,
    "resnet50": _RESNET_OPTIONS,
    "mobilenet_v3_small": _MOBILENET_V3_OPTIONS,
    "mobilenet_v3_large": _MOBILENET_V3_OPTIONS,
    "efficientnet_b0": ("adapt_stem", "stochastic_depth_prob"),
    "convnext_tiny": ("adapt_stem", "stochastic_depth_prob", "layer_scale"),
}
BACKBONE_NAMES = tuple(BACKBONE_OPTIONS)


def _whose(option: str, takes: tuple[str, ...]) -> str:
    """Where an option `takes` lacks comes from (a left-over of another backbone, or a typo)."""
    owners = [name for name, options in BACKBONE_OPTIONS.items() if option in options]
    if len(owners) == 1:
        return f"{owners[0]}'s option"
    if owners:
        return f"an option of {', '.join(owners[:2])}{f' and {len(owners) - 2} more' if len(owners) > 2 else ''}"
    hint = difflib.get_close_matches(option, takes, n=1)
    return f"did you mean {hint[0]!r}?" if hint else "no backbone's option"


def _foreign_options_error(backbone: str, args: dict[str, Any], foreign: list[str]) -> str:
    """One line: what `backbone` does not take, whose option it is, what it takes, and the override that fixes it."""
    takes = BACKBONE_OPTIONS[backbone]
    named = ", ".join(f"{k!r} ({_whose(k, takes)})" for k in foreign)
    fix = " ".join(f"-S ~model.backbone_args.{k}" for k in foreign)
    if len(foreign) == len(args):
        fix += " (or -S model.backbone_args={})"
    return (f"{backbone} takes no {named}; it takes {', '.join(takes)}. "
            f"Remove {'it' if len(foreign) == 1 else 'them'}: {fix}, or edit params.yaml")


class ModelParams(Section):
    backbone: Literal[BACKBONE_NAMES] = Field("tiny_cnn", description="Backbone architecture (graft.models.backbones).")
    backbone_args: dict[str, Any] = Field(
        default_factory=dict, description="Options of that backbone (BACKBONE_OPTIONS): width for tiny_cnn; "
                                          "adapt_stem and the torchvision builder's own for the others. An option "
                                          "the backbone does not take is refused here, not in pretrain.")

    @field_validator("backbone_args")
    @classmethod
    def _options_of_this_backbone(cls, args: dict[str, Any], info) -> dict[str, Any]:
        backbone = info.data.get("backbone")  # absent when the name itself was refused
        foreign = [k for k in args if backbone is not None and k not in BACKBONE_OPTIONS[backbone]]
        if foreign:
            raise ValueError(_foreign_options_error(backbone, args, foreign))
        return args


class TrainParams(Section):
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="auto uses CUDA when present.")
    threads: int = Field(2, ge=0, description="torch intra-op threads; 0 keeps torch's default.")
    batch_size: int = Field(64, ge=1, description="Training batch size.")
    eval_batch_size: int = Field(64, ge=1, description="Batch size for validation and test (on the CPU, 64 scored "
                                                        "2.8x faster than 512: BENCHMARKS.md).")
    launcher: Literal["local", "torchrun"] = Field(
        "local", description="How pretrain, finetune and baseline run: local (in graft's own process), or torchrun "
                             "(nnodes × nproc_per_node processes with DistributedDataParallel; batch_size is then "
                             "the global batch, split among them).")
    nproc_per_node: int = Field(1, ge=1, description="torchrun: processes per machine (one per GPU; on the CPU "
                                                     "they share train.threads).")
    nnodes: int = Field(1, ge=1, description="torchrun: machines. Above 1, start the same command on each, with "
                                             "GRAFT_RDZV_ENDPOINT=host:port naming the first.")
    sync_bn: bool = Field(False, description="torchrun on GPUs: synchronise BatchNorm statistics across processes "
                                             "(SyncBatchNorm); it does not run on the CPU, where this is ignored.")

    @model_validator(mode="after")
    def _processes_need_torchrun(self) -> TrainParams:
        if self.launcher == "local" and (self.nproc_per_node > 1 or self.nnodes > 1):
            raise ValueError(f"nproc_per_node={self.nproc_per_node} and nnodes={self.nnodes} need launcher: "
                             f"torchrun (launcher is local: one process)")
        return self


class TrackingParams(Section):
    experiment: str = Field("graft", min_length=1, description="MLflow experiment name.")
    model_name: str = Field("graft-classifier", min_length=1, description="MLflow registered model name.")


# ---------------------------------------------------------------- data sources

class _SourceBase(Section):
    # True where classes are named by their label numbers ("0", "1", ...), so that `classes: [0, 1]`, which
    # YAML reads as integers, can only mean those names.
    numbered_classes: ClassVar[bool] = False

    classes: list[str] | None = Field(None, description="Class names to use, in label order; null = all. Where "
                                                        "classes are label numbers (idx without class_names, "
                                                        "sklearn_digits), integers are read as those names.")

    @field_validator("classes", mode="before")
    @classmethod
    def _numbers_as_names(cls, value: Any) -> Any:
        def is_number(c: Any) -> bool:
            return isinstance(c, int) and not isinstance(c, bool)

        numbers = [c for c in value if is_number(c)] if isinstance(value, list) else []
        if numbers and not cls.numbered_classes:
            kind = get_args(cls.model_fields["kind"].annotation)[0]
            raise ValueError(f"{kind} classes are names, not numbers: quote each one (classes: "
                             f"['{numbers[0]}', ...]; YAML reads an unquoted 0 or 007 as a number)")
        return [str(c) if is_number(c) else c for c in value] if numbers else value

    @model_validator(mode="after")
    def _classes_not_empty(self):
        if self.classes is not None:
            if not self.classes:
                raise ValueError("classes is an empty list; list at least two class names, or null for all")
            dupes = sorted({c for c in self.classes if self.classes.count(c) > 1})
            if dupes:
                raise ValueError(f"classes lists {dupes} more than once")
        return self


class SyntheticSource(_SourceBase):
    kind: Literal["synthetic"] = "synthetic"
    per_class: int = Field(200, ge=2, description="Images generated per class.")
    style: Literal["standard", "shifted"] = Field(
        "standard", description="standard: the built-in look. shifted: the same classes drawn the way the standard "
                                "source never shows them (cluttered backgrounds, smaller and more varied sizes, other "
                                "texture scales, low contrast, heavy noise), for a target that differs from the "
                                "source in more than recombination (graft.data.synthetic).")


class ImageFolderSource(_SourceBase):
    kind: Literal["imagefolder"]
    path: str = Field(description="Folder of class_name/*.png|jpg|...; keep it under data/sources/ so DVC sees changes.")


class IdxSource(_SourceBase):
    numbered_classes: ClassVar[bool] = True

    kind: Literal["idx"]
    images: str = Field(description="IDX images file (MNIST family), gzipped or not.")
    labels: str = Field(description="IDX labels file.")
    class_names: list[str] | None = Field(None, description="Names for labels 0..K-1; default their numbers.")
    test_images: str | None = Field(None, description="The published test split's IDX images file (MNIST's "
                                                      "t10k-images), with test_labels: prepare tests on these "
                                                      "instead of carving a test split out of `images`; "
                                                      "validation still comes from `images`.")
    test_labels: str | None = Field(None, description="The published test split's IDX labels file.")

    @model_validator(mode="after")
    def _test_files_in_pairs(self) -> IdxSource:
        if (self.test_images is None) != (self.test_labels is None):
            given, lacking = ("test_images", "test_labels") if self.test_labels is None else \
                ("test_labels", "test_images")
            raise ValueError(f"{given} needs {lacking}: the test split is a pair of files (images and labels); "
                             f"give both, or neither to carve the test split out of images")
        return self

    @model_validator(mode="after")
    def _classes_among_class_names(self) -> IdxSource:
        unknown = [c for c in self.classes or () if self.class_names is not None and c not in self.class_names]
        if unknown:
            raise ValueError(f"classes {unknown} are not in class_names ({', '.join(self.class_names)}); with "
                             f"class_names set, list classes by those names, not by label number")
        return self


class SklearnDigitsSource(_SourceBase):
    """scikit-learn's bundled handwritten digits (1,797 real 8×8 grey scans, about 180 per digit; no download).
    Classes are "0".."9"; by default the source domain reads 0-4 and the target 5-9."""

    numbered_classes: ClassVar[bool] = True

    kind: Literal["sklearn_digits"]


class TorchvisionSource(_SourceBase):
    kind: Literal["torchvision"]
    name: str = Field(description="torchvision.datasets class, e.g. MNIST, CIFAR10.")
    root: str = Field(description="Root folder holding the dataset files.")
    split: Literal["train", "test"] = "train"
    download: bool = Field(False, description="Allow downloading when the files are missing (needs a network).")


Source = Annotated[Union[SyntheticSource, ImageFolderSource, IdxSource, SklearnDigitsSource, TorchvisionSource],
                   Field(discriminator="kind")]


def _digits_classes(domain: str) -> list[str]:
    return [str(d) for d in (range(5) if domain == "source" else range(5, 10))]


def _synthetic_classes(domain: str) -> list[str]:
    from graft.data.synthetic import default_classes

    return default_classes(domain)


# Kinds whose two domains split one built-in dataset by default (no `classes` needed).
DEFAULT_CLASSES = {"synthetic": _synthetic_classes, "sklearn_digits": _digits_classes}


def source_identity(src: BaseModel) -> tuple:
    """Two domains with the same identity are one dataset split by class lists."""
    d = src.model_dump(exclude={"classes", "per_class", "style"})
    return tuple(sorted(d.items()))


# ---------------------------------------------------------------- stage sections

class IngestParams(Section):
    source: Source = Field(default_factory=SyntheticSource, description="Source domain (pretraining).")
    target: Source = Field(default_factory=SyntheticSource, description="Target domain (fine-tuning).")
    bad_files: Literal["fail", "skip"] = Field("fail", description="Unreadable images: fail listing them, or skip and record them.")
    storage: Literal["auto", "memory", "shards"] = Field(
        "auto", description="How the source domain is stored: memory (one tensor file, loaded whole; fastest for "
                            "small data), shards (WebDataset tar shards under data/raw/source/, streamed through "
                            "DataLoader workers; for data that does not fit in memory), or auto: shards when the "
                            "decoded images would take more than 1 GiB (graft.data.shards.MEMORY_LIMIT_BYTES), else "
                            "memory. The target domain stays in memory whatever this says (a sharded target is not "
                            "supported yet).")
    shard_samples: int = Field(4096, ge=1, description="storage: shards: images per shard (a shard also ends at "
                                                       "256 MB). Each torchrun process reads its own shards, so keep "
                                                       "many more shards than processes.")

    @model_validator(mode="after")
    def _domains_disjoint(self) -> "IngestParams":
        if source_identity(self.source) == source_identity(self.target):
            if self.source.kind in DEFAULT_CLASSES:
                src = self.source.classes or DEFAULT_CLASSES[self.source.kind]("source")
                tgt = self.target.classes or DEFAULT_CLASSES[self.target.kind]("target")
            else:
                src, tgt = self.source.classes, self.target.classes
                if src is None or tgt is None:
                    raise ValueError("source and target read the same dataset: give each a `classes` list, disjoint")
            overlap = sorted(set(src) & set(tgt))
            if overlap:
                raise ValueError(f"source and target read the same dataset and share classes {overlap}; make the class lists disjoint")
        return self


def _test_size(value: Any) -> int | str:
    """A number of test images per class, or `all`; one message for both forms (a union would print two)."""
    if value == "all" or (isinstance(value, int) and not isinstance(value, bool) and value >= 1):
        return value
    raise ValueError("expected a number of test images per class (at least 1), or all (every image left after "
                     "data.labels_per_class and target_val_per_class)")


TestSize = Annotated[int | Literal["all"], BeforeValidator(_test_size)]


class PrepareParams(Section):
    source_val_fraction: float = Field(0.1, gt=0.0, lt=0.5, description="Share of each source class held out for validation.")
    source_test_fraction: float = Field(0.1, gt=0.0, lt=0.5, description="Share of each source class held out for "
                                                                          "test; a source with its own test files "
                                                                          "(idx test_images) is tested on all of "
                                                                          "them instead.")
    target_val_per_class: int = Field(20, ge=1, description="Target validation images per class, drawn apart from the label budget.")
    target_test_per_class: TestSize = Field(
        50, description="Target test images per class, drawn before validation and the label budget so that the "
                        "test set does not move with them; `all`: every image left after the label budget and "
                        "validation. A target with its own test files (idx test_images) draws them from those "
                        "(`all`: every one).")


class AugmentParams(Section):
    """Per-sample augmentation of the uint8 training images (torchvision.transforms.v2); each part can be off."""

    crop_padding: int = Field(0, ge=0, le=64, description="Padded random crop: reflect-pad each side by this many "
                                                             "pixels, then crop back to size; 0 switches it off.")
    flip: bool = Field(False, description="Random horizontal flip (half the images).")
    trivial_augment: bool = Field(False, description="TrivialAugmentWide: one random op at a random strength per image.")


SCHEDULES = ("cosine", "constant", "one_cycle", "warmup_cosine")


class OptimParams(Section):
    """How a stage trains; shared by pretrain and finetune (the baseline reuses finetune's, see dvc.yaml)."""

    epochs: int = Field(10, ge=1, description="Training epochs.")
    lr: float = Field(1e-3, gt=0.0, le=10.0, description="Peak learning rate.")
    optimizer: Literal["adamw", "sgd"] = Field("adamw", description="adamw, or sgd with (Nesterov) momentum.")
    weight_decay: float = Field(5e-4, ge=0.0, description="Not applied to norms and biases.")
    momentum: float = Field(0.9, ge=0.0, lt=1.0, description="SGD momentum.")
    schedule: Literal[SCHEDULES] = Field(
        "cosine", description="Learning rate over each training phase: cosine (to zero), constant, one_cycle "
                              "(warm up from lr/25, then anneal towards lr/2.5e5: torch's OneCycleLR defaults) or "
                              "warmup_cosine (linear warm-up, then cosine).")
    warmup: float = Field(0.25, ge=0.0, lt=1.0, description="Share of each phase spent warming up (one_cycle, "
                                                             "warmup_cosine; fastai's pct_start).")
    label_smoothing: float = Field(0.0, ge=0.0, lt=1.0, description="Label smoothing of the training loss.")
    grad_clip: float = Field(5.0, ge=0.0, description="Clip the gradient norm to this; 0 switches clipping off.")
    augment: AugmentParams = Field(default_factory=AugmentParams, description="Augmentation of the training images.")
    keep: Literal["last", "best"] = Field("last", description="Which weights the stage writes: the last epoch's, or "
                                                              "the best epoch's by `monitor` on the validation set.")
    monitor: Literal["val_acc", "val_loss"] = Field("val_acc", description="Validation metric for keep: best and "
                                                                           "early stopping (val_acc ties go to the "
                                                                           "lower val_loss).")
    patience: int = Field(0, ge=0, description="Stop after this many epochs without improvement of `monitor` "
                                               "(never in a frozen phase that is followed by another); 0: never.")
    validate_every: int = Field(1, ge=1, description="Validate after every this many epochs, and always after the "
                                                     "last. Raise it when a validation pass is a large share of an "
                                                     "epoch (large validation sets, short epochs); keep: best and "
                                                     "patience then see only the validated epochs.")
    ema_decay: float = Field(0.0, ge=0.0, lt=1.0, description="Exponential moving average of the weights (e.g. "
                                                              "0.99); validation and the written weights use it. "
                                                              "0 switches it off.")


WEIGHTS_HELP = ("train, torchvision:<Arch>_Weights.<NAME> (e.g. torchvision:ResNet18_Weights.IMAGENET1K_V1), or the "
                "path of a local .safetensors / .pt / .pth file (keep it under data/weights/, a DVC dependency)")
WEIGHT_FILE_SUFFIXES = (".safetensors", ".pt", ".pth", ".bin")


class PretrainParams(OptimParams):
    weights: str = Field("train", description="Where the backbone comes from: " + WEIGHTS_HELP + ".")
    input_size: int = Field(0, ge=0, le=1024, description="Imported weights only: the side the backbone sees (the "
                                                          "model resizes its inputs to it). 0: the published size "
                                                          "(224) for a published architecture, else "
                                                          "data.image_size.")

    @field_validator("weights")
    @classmethod
    def _weights_form(cls, v: str) -> str:
        if v == "train" or Path(v).suffix.lower() in WEIGHT_FILE_SUFFIXES:
            return v
        if v.startswith("torchvision:"):
            name = v.split(":", 1)[1]
            if re.fullmatch(r"[A-Za-z0-9_]+_Weights\.[A-Za-z0-9_]+", name):
                return v
        raise ValueError(f"expected {WEIGHTS_HELP}")

    @model_validator(mode="after")
    def _input_size_needs_import(self) -> "PretrainParams":
        if self.input_size and self.weights == "train":
            raise ValueError("input_size applies to imported weights only; with weights: train, the backbone sees "
                             "data.image_size (set input_size: 0)")
        if 0 < self.input_size < 8:
            raise ValueError(f"input_size = {self.input_size}: use 0 (automatic) or a side of at least 8")
        return self


class ReplaceHeadParams(Section):
    head: HeadParams = Field(default_factory=HeadParams, description="The new head grafted onto the backbone.")


STRATEGIES = ("auto", "linear_probe", "lp_ft", "full", "gradual_unfreeze")
CANDIDATE_STRATEGIES = ("linear_probe", "lp_ft", "full", "gradual_unfreeze")

def _rate(value: Any) -> float | str:
    """A peak learning rate, or `auto`: the strategy's own default (graft.training.strategies.DEFAULT_RATES),
    so that switching strategy never keeps a rate that was chosen for another one. One message for both
    forms (pydantic's union errors would print two)."""
    if value == "auto":
        return value
    try:
        rate = float(value)
    except (TypeError, ValueError):
        raise ValueError("expected a learning rate (a number greater than 0) or auto (the strategy's default)") from None
    if isinstance(value, bool) or not 0.0 < rate <= 10.0:
        raise ValueError("a learning rate must be greater than 0 and at most 10, or auto (the strategy's default)")
    return rate


Rate = Annotated[Union[float, str], BeforeValidator(_rate)]


class FinetuneParams(OptimParams):
    strategy: Literal[STRATEGIES] = Field(
        "auto", description="auto: train each of `candidates` and keep the one with the best validation score "
                            "(accuracy, ties to the lower loss). linear_probe: the backbone stays frozen. lp_ft: a "
                            "linear probe, then everything fine-tuned gently from there (Kumar et al., 2022). full: "
                            "everything trains, the backbone at backbone_lr. gradual_unfreeze: the head alone for "
                            "freeze_epochs, then everything (fastai's fine_tune).")
    candidates: list[Literal[CANDIDATE_STRATEGIES]] = Field(
        default_factory=lambda: ["linear_probe", "lp_ft", "full"],
        description="auto: the strategies tried, each at its own default rates unless lr/backbone_lr are set. "
                    "lp_ft reuses linear_probe's result, so the default set costs about 3 runs of `epochs`.")
    lr: Rate = Field("auto", description="Peak rate of the head (lp_ft: while the head trains alone). auto: the "
                                         "strategy's default (0.01 for every strategy).")
    backbone_lr: Rate = Field("auto", description="Peak rate of the backbone's top layer group (layer_decay scales "
                                                  "the groups below; lp_ft: the rate of every layer once the backbone "
                                                  "joins). auto: the strategy's default (full and gradual_unfreeze "
                                                  "0.001, lp_ft 0.001).")
    freeze_epochs: int = Field(1, ge=1, description="gradual_unfreeze: epochs with the backbone frozen, counted in "
                                                    "`epochs` (fastai's default is 1).")
    unfrozen_lr_factor: float = Field(0.5, gt=0.0, le=10.0, description="gradual_unfreeze: after unfreezing, the "
                                                                        "head and backbone peak at their rates × this "
                                                                        "(fastai halves them).")
    layer_decay: float = Field(1.0, gt=0.0, le=1.0, description="Discriminative rates: the backbone's top group "
                                                                "trains at backbone_lr and each group below it at "
                                                                "this factor of the group above (timm's layer_decay; "
                                                                "fastai's lr_mult=M over G groups is "
                                                                "M**(-1/(G-1))). 1: one rate for the backbone.")
    train_bn: bool = Field(True, description="When false, frozen BatchNorm layers stay in eval mode, so their "
                                             "running statistics do not drift.")

    @model_validator(mode="after")
    def _freeze_within_epochs(self) -> "FinetuneParams":
        uses_gradual = self.strategy == "gradual_unfreeze" or (self.strategy == "auto"
                                                              and "gradual_unfreeze" in self.candidates)
        if uses_gradual and self.freeze_epochs >= self.epochs:
            raise ValueError(f"freeze_epochs ({self.freeze_epochs}) must be below epochs ({self.epochs}) for "
                             f"gradual_unfreeze, or nothing is ever unfrozen; use linear_probe for that")
        return self

    @model_validator(mode="after")
    def _candidates_make_sense(self) -> "FinetuneParams":
        if self.strategy == "auto":
            if not self.candidates:
                raise ValueError("candidates is empty: auto needs at least one strategy to try (e.g. "
                                 "[linear_probe, lp_ft, full]), or set strategy to one of them")
            dupes = sorted({c for c in self.candidates if self.candidates.count(c) > 1})
            if dupes:
                raise ValueError(f"candidates lists {dupes} more than once")
        return self


class BaselineParams(Section):
    """The from-scratch control trains as finetune does (epochs, optimizer, schedule, augmentation, ...), with its
    own learning rate and weight decay: only pretraining differs."""

    lr: float = Field(3e-3, gt=0.0, le=10.0, description="Learning rate of the from-scratch control.")
    weight_decay: float = Field(5e-4, ge=0.0, description="Weight decay of the from-scratch control.")


class EvaluateParams(Section):
    calibration_bins: int = Field(15, ge=2, description="Bins of the expected calibration error.")


class RegisterParams(Section):
    alpha: float = Field(0.05, gt=0.0, lt=1.0, description="Promote only if McNemar's one-sided p-value is below this.")
    allow_scratch: bool = Field(True, description="Register the from-scratch control instead of the fine-tuned model "
                                                  "when it is better on the validation split (negative transfer; "
                                                  "tagged graft.candidate: scratch). false: always register the "
                                                  "fine-tuned model, and never promote one that lost.")


class RetrainParams(Section):
    """Scheduled retraining (flows/retrain.py). No stage reads it, so editing it reruns nothing."""
    webhook: str = Field("", description="URL that receives every retraining outcome as JSON (POST); "
                                        "`env:NAME` reads it from the environment (keeps tokens out of git "
                                        "and MLflow); empty: no notification.")

    @field_validator("webhook")
    @classmethod
    def _webhook_form(cls, v: str) -> str:
        if v and not (v.startswith(("http://", "https://")) or (v.startswith("env:") and len(v) > 4)):
            raise ValueError(f"{v!r} is neither an http(s):// URL nor env:VARIABLE_NAME (or empty for none)")
        return v


# `register` is a stage name; pydantic warns that it shadows ABCMeta.register, which Params never uses.
warnings.filterwarnings("ignore", message='Field name "register"', category=UserWarning)


class Params(Section):
    seed: int = Field(0, ge=0, description="Every random draw derives from (seed, stage, epoch).")
    data: DataParams = Field(default_factory=DataParams)
    model: ModelParams = Field(default_factory=ModelParams)
    train: TrainParams = Field(default_factory=TrainParams)
    tracking: TrackingParams = Field(default_factory=TrackingParams)
    ingest: IngestParams = Field(default_factory=IngestParams)
    prepare: PrepareParams = Field(default_factory=PrepareParams)
    pretrain: PretrainParams = Field(default_factory=PretrainParams)
    replace_head: ReplaceHeadParams = Field(default_factory=ReplaceHeadParams)
    finetune: FinetuneParams = Field(default_factory=FinetuneParams)
    baseline: BaselineParams = Field(default_factory=BaselineParams)
    evaluate: EvaluateParams = Field(default_factory=EvaluateParams)
    register: RegisterParams = Field(default_factory=RegisterParams)
    retrain: RetrainParams = Field(default_factory=RetrainParams)


# ---------------------------------------------------------------- loading

SOURCE_KINDS = {"synthetic": SyntheticSource, "imagefolder": ImageFolderSource, "idx": IdxSource,
                "sklearn_digits": SklearnDigitsSource, "torchvision": TorchvisionSource}


def _allowed_keys(raw: Any, loc: tuple) -> list[str]:
    """The field names allowed at `loc` (for "did you mean" on unknown keys)."""
    model: type[BaseModel] | None = Params
    for part in loc:
        if model is None or isinstance(part, int):
            return []
        field = model.model_fields.get(part)
        raw = raw.get(part) if isinstance(raw, dict) else None
        if field is None:
            return []
        ann = field.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            model = ann
        elif field.discriminator == "kind":  # a data source: its kind says which fields it has
            model = SOURCE_KINDS.get(raw.get("kind", "synthetic") if isinstance(raw, dict) else "synthetic")
        else:
            model = None
    return list(model.model_fields) if model is not None else []


def _format_error(err: dict, raw: dict, origin: str) -> str:
    loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and p in SOURCE_KINDS))
    key = ".".join(str(p) for p in loc) or "(top level)"
    value = err.get("input")
    if err["type"] == "extra_forbidden":
        parent = loc[:-1]
        allowed = _allowed_keys(raw, parent)
        hint = difflib.get_close_matches(str(loc[-1]), allowed, n=1)
        suggestion = f"; did you mean {'.'.join(map(str, parent + (hint[0],)))!r}?" if hint else ""
        return f"{origin}: unknown key {key!r}{suggestion} (allowed here: {', '.join(allowed)})"
    # A section's or a source's whole mapping (the input of a missing key, too) is noise in a one-line error;
    # a mapping value (backbone_args) is not.
    hidden = err["type"] == "missing" or (isinstance(value, dict) and _allowed_keys(raw, loc))
    shown = "" if hidden else f" = {value!r}"
    message = err["msg"].removeprefix("Value error, ")  # pydantic's prefix for our own validators' messages
    return f"{origin}: {key}{shown}: {message}"


def validate_params(raw: Any, origin: str = "params.yaml") -> Params:
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{origin}: expected a mapping of sections, got {type(raw).__name__}")
    try:
        return Params.model_validate(raw)
    except ValidationError as e:
        lines = [_format_error(err, raw, origin) for err in e.errors(include_url=False)]
        raise ConfigError("invalid parameters:\n  " + "\n  ".join(lines)) from None


def read_params_file(path: Path) -> dict:
    """params.yaml as plain data; ConfigError in one line when it is not YAML or holds nothing."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())  # the pure-Python parser: its messages say more than libyaml's
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        what = " ".join(str(getattr(e, "problem", None) or e).split())
        context, start = getattr(e, "context", None), getattr(e, "context_mark", None)
        if context and start is not None and start.line != getattr(mark, "line", None):
            what += f" ({context} that starts at line {start.line + 1}, column {start.column + 1})"
        raise ConfigError(f"{path.name} is not valid YAML{where}: {what}") from None
    if raw is None:
        raise ConfigError(f"{path.name} is empty; restore it with `git checkout {path.name}`, or write the "
                          f"sections graft/config.py documents")
    if not isinstance(raw, dict):
        raise ConfigError(f"{path.name}: expected a mapping of sections, got {type(raw).__name__}")
    return raw


def load_params(path: Path) -> Params:
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"{path}: not found; run from the repository root or pass --params")
    return validate_params(read_params_file(path), origin=str(path.name))


# ---------------------------------------------------------------- overrides (-S key=value)

# The value of an override `~KEY` (Hydra's form): take KEY out of params.yaml. `KEY=~` cannot mean that:
# YAML reads ~ as null, which is a value of its own (classes: null, every class).
REMOVE = object()


def parse_override(text: str) -> tuple[list[str], Any]:
    """`finetune.lr=0.001` -> (["finetune", "lr"], 0.001); `~model.backbone_args.width` -> (its key, REMOVE).
    Values are parsed as YAML, like DVC."""
    if text.startswith("~"):
        if "=" in text:
            raise ConfigError(f"override {text!r}: ~KEY removes KEY and takes no value, "
                              f"e.g. ~model.backbone_args.width")
        return _key_parts(text, text[1:]), REMOVE
    if "=" not in text:
        raise ConfigError(f"override {text!r}: expected KEY=VALUE, e.g. finetune.lr=0.001 (or ~KEY to remove KEY)")
    key, value = text.split("=", 1)
    try:
        parsed = yaml.safe_load(value) if value.strip() else ""
    except yaml.YAMLError as e:
        raise ConfigError(f"override {text!r}: value is not valid YAML ({e})") from None
    return _key_parts(text, key), parsed


def _key_parts(text: str, key: str) -> list[str]:
    parts = key.strip().split(".")
    if not all(parts):
        raise ConfigError(f"override {text!r}: empty key segment")
    return parts


def _set(tree: Any, parts: list[str], value: Any) -> None:
    if value is REMOVE:
        parent = select(tree, parts[:-1])
        if not isinstance(parent, dict) or parts[-1] not in parent:
            raise ConfigError(f"override ~{'.'.join(parts)}: params.yaml has no {'.'.join(parts)} to remove")
        if hasattr(parent, "ca"):  # ruamel's round-trip mapping: keep the lines that follow the key
            _remove_keeping_layout(tree, parts)
        else:
            del parent[parts[-1]]
        return
    parent = None
    for p in parts[:-1]:
        if p not in tree or not hasattr(tree[p], "__setitem__"):
            tree[p] = {}
        parent, tree = tree, tree[p]
    if hasattr(tree, "ca") and not tree and parent is not None:
        # An empty ruamel mapping is `{}` on its key's line, with the lines after that line: they follow the
        # first key now (in block style), not come between the key and its mapping.
        following = _take_following_lines(parent, parts[-2], 2)
        tree.fa.set_block_style()
        tree[parts[-1]] = value
        _give_following_lines(tree, parts[-1], 2, following)
        return
    tree[parts[-1]] = value


# ruamel keeps the blank and comment lines that follow a line in that line's end-of-line comment (a mapping
# key's comment entry, slot 2; a list item's, slot 0): deleting or emptying a key would take them along.

def _trailing_comment_slot(node: Any, key: Any) -> tuple[Any, Any, int]:
    """Where the lines that follow `node[key]` are kept: with the last scalar inside it."""
    value = node[key]
    if isinstance(value, (dict, list)) and hasattr(value, "fa") and value and not value.fa.flow_style():
        return _trailing_comment_slot(value, list(value)[-1] if isinstance(value, dict) else len(value) - 1)
    return node, key, 0 if isinstance(node, list) else 2


def _take_following_lines(holder: Any, at: Any, slot: int) -> str:
    """Cut the lines after an end-of-line comment off it; returns them."""
    token = holder.ca.items.get(at, [None] * 4)[slot]
    if token is None or "\n" not in token.value:
        return ""
    head, following = token.value.split("\n", 1)
    token.value = head + "\n"
    return following


def _give_following_lines(holder: Any, at: Any, slot: int, following: str) -> None:
    if not following:
        return
    from ruamel.yaml.error import CommentMark
    from ruamel.yaml.tokens import CommentToken

    entry = holder.ca.items.setdefault(at, [None] * 4)
    if entry[slot] is None:
        entry[slot] = CommentToken("\n" + following, CommentMark(0), None)
    else:
        entry[slot].value += following


def _remove_keeping_layout(doc: Any, parts: list[str]) -> None:
    """Delete a key from a ruamel document, keeping the lines after it (the blank line and comment before the
    next section) after the key before it, or after its mapping's own key when it was the only one."""
    mapping, key = select(doc, parts[:-1]), parts[-1]
    following = _take_following_lines(*_trailing_comment_slot(mapping, key))
    keys = list(mapping)
    position = keys.index(key)
    del mapping[key]
    if not mapping and len(parts) > 1:
        mapping.fa.set_flow_style()  # `{}` on its key's line, before the lines that followed
        _give_following_lines(select(doc, parts[:-2]), parts[-2], 2, following)
    elif position > 0:
        _give_following_lines(*_trailing_comment_slot(mapping, keys[position - 1]), following)
    # else: the first of several keys; ruamel has no place before a key, so the lines go with it


def declared_values(params: "Params", keys: list[str] | tuple[str, ...]) -> dict[str, Any]:
    """The validated values of params keys or sections (as a stage's contract lists them): what the run
    used, as numbers where params.yaml wrote `1e-3`, for logging. Never the raw YAML."""
    tree = params.model_dump(mode="json")
    return {key: select(tree, key.split(".")) for key in keys}


def select(tree: Any, parts: list[str], default: Any = None) -> Any:
    """The value at a key path (["finetune", "lr"]) in nested dicts, or `default` where there is none."""
    for part in parts:
        if not isinstance(tree, dict) or part not in tree:
            return default
        tree = tree[part]
    return tree


_MISSING = object()


def _as_validated(validated: dict, parts: list[str], value: Any) -> Any:
    """A scalar as graft read it: YAML 1.1 reads `1e-3` as a string, which pydantic turns into 0.001;
    written back as 0.001, DVC and MLflow see the number the run used."""
    node = select(validated, parts, _MISSING)
    return value if node is _MISSING or isinstance(node, (dict, list)) else node


# The keys that hold a data source: a mapping whose `kind` says which other keys it takes.
SOURCE_KEYS = tuple(f"ingest.{name}" for name, field in IngestParams.model_fields.items()
                    if field.discriminator == "kind")


def _left_by_kind_change(tree: dict, parts: list[str], value: Any, typed: set[tuple[str, ...]]) -> list[str]:
    """The keys an override of a source's `kind` leaves behind: those only the old kind takes (synthetic's
    per_class after kind=imagefolder), which would be refused as unknown although the user never typed them.
    A key an override sets stays, to be accepted or refused like any other."""
    if parts[-1] != "kind" or ".".join(parts[:-1]) not in SOURCE_KEYS:
        return []
    source = select(tree, parts[:-1])
    old = source.get("kind") if isinstance(source, dict) else None
    if old not in SOURCE_KINDS or value not in SOURCE_KINDS or old == value:
        return []
    old_fields, new_fields = SOURCE_KINDS[old].model_fields, SOURCE_KINDS[value].model_fields
    return [k for k in source if k in old_fields and k not in new_fields and (*parts[:-1], k) not in typed]


def _apply(tree: dict, parsed: list[tuple[list[str], Any]],
           written: Callable[[list[str], Any], Any]) -> list[tuple[str, str, str, list[str]]]:
    """Set each override in `tree` (its value as `written` says), dropping what a kind change leaves behind;
    returns (source key, old kind, new kind, dropped keys) for each kind change that dropped keys."""
    typed = {tuple(parts) for parts, _ in parsed}
    dropped = []
    for parts, value in parsed:
        left = _left_by_kind_change(tree, parts, value, typed)
        if left:
            dropped.append((".".join(parts[:-1]), select(tree, parts[:-1])["kind"], value, left))
        for key in left:
            _set(tree, [*parts[:-1], key], REMOVE)
        _set(tree, parts, written(parts, value))
    return dropped


def apply_overrides(path: Path, overrides: list[str], write: bool = True,
                    tell: Callable[[str], None] | None = None) -> Params:
    """Validate `overrides` against params.yaml and, only if valid, write them into it.

    Like `dvc exp run -S`, the values land in the file, so dvc.lock and params.yaml always agree.
    Comments and layout are kept (ruamel round-trip). `tell` hears one line for each source whose kind an
    override changed, naming the keys of the old kind that were dropped (said only once the result is valid).
    """
    path = Path(path)
    plain = read_params_file(path) if path.exists() else {}
    parsed = [parse_override(o) for o in overrides]
    dropped = _apply(plain, parsed, written=lambda parts, value: value)
    params = validate_params(plain, origin=f"{path.name} with overrides")
    for source, old, new, keys in dropped if tell else ():
        tell(f"{source}: kind {old} → {new}; {'dropped' if write else 'would drop'} {', '.join(keys)} ({old}'s)")
    if not parsed or not write:
        return params
    from ruamel.yaml import YAML

    rt = YAML()
    rt.preserve_quotes = True
    doc = rt.load(path.read_text()) if path.exists() else {}
    validated = params.model_dump(mode="json")
    _apply(doc, parsed,
           written=lambda parts, value: value if value is REMOVE else _as_validated(validated, parts, value))
    tmp = path.with_suffix(".yaml.tmp")
    with tmp.open("w") as f:
        rt.dump(doc, f)
    tmp.replace(path)
    return params


def section_hash(params: Params, keys: list[str]) -> str:
    """A short hash of the named sections/keys (e.g. ["seed", "finetune"]); used for run tags."""
    import hashlib
    import json

    dumped = params.model_dump(mode="json")
    picked = {}
    for key in keys:
        node: Any = dumped
        for part in key.split("."):
            node = node[part]
        picked[key] = node
    return hashlib.sha256(json.dumps(picked, sort_keys=True).encode()).hexdigest()[:12]
