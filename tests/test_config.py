import inspect
import re
from pathlib import Path

import pytest
import yaml

from graft.config import (
    BACKBONE_NAMES,
    BACKBONE_OPTIONS,
    REMOVE,
    ConfigError,
    apply_overrides,
    load_params,
    parse_override,
    validate_params,
)

REPO = Path(__file__).resolve().parents[1]


def errors_for(raw: dict) -> str:
    with pytest.raises(ConfigError) as e:
        validate_params(raw)
    return str(e.value)


def test_shipped_params_parse():
    params = load_params(REPO / "params.yaml")
    assert params.finetune.strategy in ("auto", "full", "linear_probe", "lp_ft", "gradual_unfreeze")
    assert params.ingest.source.kind == "synthetic"


def test_unknown_key_names_it_and_suggests():
    msg = errors_for({"finetune": {"lrr": 0.1}})
    assert "unknown key 'finetune.lrr'" in msg
    assert "did you mean 'finetune.lr'" in msg


def test_unknown_section_suggests():
    msg = errors_for({"finetun": {"lr": 0.1}})
    assert "'finetun'" in msg and "did you mean 'finetune'" in msg


def test_wrong_type_names_key_and_value():
    msg = errors_for({"finetune": {"epochs": "many"}})
    assert "finetune.epochs = 'many'" in msg


@pytest.mark.parametrize("lr", [0, -0.1])
def test_non_positive_learning_rate_rejected(lr):
    msg = errors_for({"finetune": {"lr": lr}})
    assert f"finetune.lr = {lr}" in msg and "greater than 0" in msg


def test_empty_class_list_rejected():
    msg = errors_for({"ingest": {"target": {"kind": "synthetic", "classes": []}}})
    assert "ingest.target" in msg and "empty list" in msg


def test_overlapping_domains_rejected():
    msg = errors_for({"ingest": {"source": {"kind": "synthetic", "classes": ["circle_solid", "ring_dots"]},
                                 "target": {"kind": "synthetic", "classes": ["ring_dots", "cross_solid"]}}})
    assert "share classes ['ring_dots']" in msg


def test_unknown_backbone_and_strategy_list_allowed_values():
    msg = errors_for({"model": {"backbone": "resnet1000"}, "finetune": {"strategy": "magic"}})
    assert "model.backbone = 'resnet1000'" in msg and "resnet18" in msg
    assert "finetune.strategy = 'magic'" in msg and "linear_probe" in msg


def test_backbone_names_match_registry():
    from graft.models.backbones import available_backbones

    assert sorted(BACKBONE_NAMES) == sorted(available_backbones())


def test_parse_override_reads_yaml_values():
    assert parse_override("finetune.lr=0.01") == (["finetune", "lr"], 0.01)
    assert parse_override("finetune.strategy=linear_probe") == (["finetune", "strategy"], "linear_probe")
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        parse_override("finetune.lr")


def test_override_is_written_keeping_comments(tmp_path):
    f = tmp_path / "params.yaml"
    f.write_text((REPO / "params.yaml").read_text())
    params = apply_overrides(f, ["finetune.lr=0.01"])
    assert params.finetune.lr == 0.01
    text = f.read_text()
    assert yaml.safe_load(text)["finetune"]["lr"] == 0.01
    assert "# label budget" in text  # comments survive


def test_override_is_written_as_the_value_graft_used(tmp_path):
    """YAML 1.1 reads 1e-3 as a string; the file must hold the number the run used, for DVC and MLflow."""
    f = tmp_path / "params.yaml"
    f.write_text((REPO / "params.yaml").read_text())
    apply_overrides(f, ["finetune.lr=1e-3", "pretrain.epochs=3"])
    written = yaml.safe_load(f.read_text())
    assert written["finetune"]["lr"] == 0.001 and written["pretrain"]["epochs"] == 3


def test_invalid_override_writes_nothing(tmp_path):
    f = tmp_path / "params.yaml"
    original = (REPO / "params.yaml").read_text()
    f.write_text(original)
    with pytest.raises(ConfigError, match="finetune.lr"):
        apply_overrides(f, ["finetune.lr=-1"])
    assert f.read_text() == original


def test_every_dvc_param_is_written_in_params_yaml():
    """DVC fails on a declared param that params.yaml lacks, even if the schema has a default."""
    from graft.dvc import load_dag, missing_params

    assert missing_params(REPO, load_dag(REPO)) == []


def test_each_stage_declares_its_own_section():
    from graft.dvc import load_dag
    from graft.stages import STAGES

    dag = load_dag(REPO)
    assert tuple(dag) == STAGES
    for name in STAGES:
        assert name in dag[name].params, f"{name} must read its own params section"
        assert f"graft/stages/{name}.py" in dag[name].deps, f"{name}'s own code must be a DVC dependency"


def test_unknown_key_in_a_source_lists_that_kinds_fields():
    msg = errors_for({"ingest": {"target": {"kind": "imagefolder", "path": "x", "per_class": 3}}})
    assert "unknown key 'ingest.target.per_class'" in msg and "path" in msg


@pytest.mark.parametrize("text,expected", [
    ("seed: 0\ndata:\n  image_size: [16\n", "params.yaml is not valid YAML at line 4, column 1: expected ',' or ']'"),
    ("seed: 0\n  bad: indent\n", "params.yaml is not valid YAML at line 2, column 6: mapping values are not allowed"),
    ("", "params.yaml is empty; restore it with `git checkout params.yaml`"),
    ("# only a comment\n", "params.yaml is empty"),
])
def test_unreadable_params_file_is_one_clear_line(tmp_path, text, expected):
    path = tmp_path / "params.yaml"
    path.write_text(text)
    for load in (load_params, lambda p: apply_overrides(p, ["finetune.lr=0.1"])):
        with pytest.raises(ConfigError) as e:
            load(path)
        assert str(e.value).startswith(expected) and "\n" not in str(e.value), str(e.value)
    assert path.read_text() == text


def test_logged_params_are_the_validated_values_not_the_raw_yaml():
    """A hand-written `lr: 1e-3` is a string to YAML 1.1; the stage run logs the number the run used."""
    import yaml

    from graft.config import declared_values, validate_params
    from tests.conftest import tiny_params_dict

    raw = tiny_params_dict()
    raw["finetune"]["lr"] = yaml.safe_load("x: 1e-3")["x"]
    assert raw["finetune"]["lr"] == "1e-3"  # what DVC and a raw read see
    values = declared_values(validate_params(raw), ("seed", "finetune.lr", "train"))
    assert values["finetune.lr"] == 0.001 and values["seed"] == raw["seed"]
    assert values["train"]["batch_size"] == raw["train"]["batch_size"]


def one_error(raw: dict) -> str:
    """The one error line of `raw` (after the "invalid parameters:" header)."""
    lines = errors_for(raw).splitlines()
    assert len(lines) == 2, lines
    return lines[1].strip()


def shipped_copy(tmp_path: Path) -> Path:
    f = tmp_path / "params.yaml"
    f.write_text((REPO / "params.yaml").read_text())
    return f


# ---------------------------------------------------------------- model.backbone_args

def _defaults(fn) -> dict:
    """The keyword parameters of `fn` that have defaults: the options YAML could set."""
    return {n: p.default for n, p in inspect.signature(fn).parameters.items()
            if p.default is not p.empty and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}


# The torchvision classes' parameters that are not backbone options: callables YAML cannot write, the removed
# classifier's (num_classes, dropout), and what the builder sets itself (efficientnet's last_channel).
NOT_BACKBONE_OPTIONS = {"norm_layer", "block", "num_classes", "dropout", "last_channel"}


def test_backbone_options_match_the_factories():
    """config.BACKBONE_OPTIONS, kept apart so that validation never imports torch, says what the factories take."""
    import torch
    import torchvision.models
    from torchvision.models.mobilenetv3 import _mobilenet_v3_conf

    from graft.models.backbones import TORCHVISION_ARCHS, TinyCNN, TorchvisionBackbone, create_backbone

    defaults = {"tiny_cnn": _defaults(TinyCNN)}
    for arch, family in TORCHVISION_ARCHS.items():
        model_class = inspect.signature(getattr(torchvision.models, arch)).return_annotation  # ResNet, ...
        builder_conf = _defaults(_mobilenet_v3_conf) if family == "mobilenet_v3" else {}  # width_mult, ...
        options = {**_defaults(TorchvisionBackbone), **_defaults(model_class), **builder_conf}
        defaults[arch] = {k: v for k, v in options.items() if k not in NOT_BACKBONE_OPTIONS}
    assert {name: set(d) for name, d in defaults.items()} == {n: set(o) for n, o in BACKBONE_OPTIONS.items()}
    with torch.device("meta"):  # each option is taken for real; on the meta device building costs nothing
        for name, options in defaults.items():
            create_backbone(name, 3, 32, **options)


def test_options_of_another_backbone_refused_in_one_line():
    line = one_error({"model": {"backbone": "resnet18", "backbone_args": {"width": 32}}})
    assert "model.backbone_args = {'width': 32}: resnet18 takes no 'width' (tiny_cnn's option)" in line
    assert "it takes adapt_stem, zero_init_residual" in line
    assert "-S ~model.backbone_args.width (or -S model.backbone_args={})" in line


def test_misspelt_backbone_option_suggests_and_keeps_the_good_ones():
    line = one_error({"model": {"backbone": "resnet18", "backbone_args": {"adapt_stem": False, "adapt_stm": True}}})
    assert "'adapt_stm' (did you mean 'adapt_stem'?)" in line
    assert "-S ~model.backbone_args.adapt_stm," in line and "backbone_args={}" not in line


def test_each_backbones_own_options_pass():
    assert validate_params({"model": {"backbone": "tiny_cnn", "backbone_args": {"width": 8}}})
    assert validate_params({"model": {"backbone": "convnext_tiny", "backbone_args": {"adapt_stem": False,
                                                                                     "stochastic_depth_prob": 0.1}}})
    assert validate_params({"model": {"backbone": "resnet18", "backbone_args": {}}})


def test_switching_backbone_with_an_override_is_refused_before_writing(tmp_path):
    f = shipped_copy(tmp_path)
    before = f.read_text()
    with pytest.raises(ConfigError, match=r"resnet18 takes no 'width' \(tiny_cnn's option\)"):
        apply_overrides(f, ["model.backbone=resnet18"])
    assert f.read_text() == before
    params = apply_overrides(f, ["model.backbone=resnet18", "~model.backbone_args.width"])
    assert params.model.backbone_args == {}
    assert re.search(r"\n  backbone_args: \{\}[^\n]*\n\ntrain:", f.read_text())  # the blank line before train stays


# ---------------------------------------------------------------- classes given as numbers

def test_integer_classes_of_numbered_sources_are_their_names():
    idx = {"kind": "idx", "images": "i", "labels": "l", "classes": [5, 6, 7]}
    assert validate_params({"ingest": {"target": idx}}).ingest.target.classes == ["5", "6", "7"]
    digits = {"kind": "sklearn_digits", "classes": [0, "1"]}
    assert validate_params({"ingest": {"source": digits}}).ingest.source.classes == ["0", "1"]


def test_integer_classes_of_named_sources_are_one_line():
    line = one_error({"ingest": {"target": {"kind": "imagefolder", "path": "x", "classes": [0, 1]}}})
    assert line.startswith("params.yaml: ingest.target.classes = [0, 1]: imagefolder classes are names")
    assert "quote each one" in line


def test_idx_classes_must_be_among_class_names():
    line = one_error({"ingest": {"target": {"kind": "idx", "images": "i", "labels": "l", "classes": [0, 1],
                                            "class_names": ["cat", "dog"]}}})
    assert "classes ['0', '1'] are not in class_names (cat, dog)" in line


# ---------------------------------------------------------------- a source's kind changed by -S

def test_kind_override_drops_the_old_kinds_keys_and_says_so(tmp_path):
    f = shipped_copy(tmp_path)
    told = []
    params = apply_overrides(f, ["ingest.source.kind=imagefolder", "ingest.source.path=data/sources/x"],
                             tell=told.append)
    assert params.ingest.source.path == "data/sources/x"
    assert told == ["ingest.source: kind synthetic → imagefolder; dropped per_class (synthetic's)"]
    written = yaml.safe_load(f.read_text())["ingest"]
    assert written["source"] == {"kind": "imagefolder", "path": "data/sources/x"}
    assert written["target"]["per_class"] == 100  # the other domain is left alone
    assert "kind: imagefolder     # synthetic | imagefolder" in f.read_text()


def test_kind_override_dry_run_says_would_drop_and_writes_nothing(tmp_path):
    f = shipped_copy(tmp_path)
    before, told = f.read_text(), []
    apply_overrides(f, ["ingest.target.kind=sklearn_digits"], write=False, tell=told.append)
    assert told == ["ingest.target: kind synthetic → sklearn_digits; would drop per_class (synthetic's)"]
    assert f.read_text() == before


def test_kind_override_keeps_a_key_the_user_typed(tmp_path):
    with pytest.raises(ConfigError, match="unknown key 'ingest.source.per_class'"):
        apply_overrides(shipped_copy(tmp_path), ["ingest.source.kind=imagefolder", "ingest.source.path=x",
                                                 "ingest.source.per_class=3"])


# ---------------------------------------------------------------- -S ~KEY

def test_parse_override_reads_removals():
    assert parse_override("~model.backbone_args.width") == (["model", "backbone_args", "width"], REMOVE)
    with pytest.raises(ConfigError, match="takes no value"):
        parse_override("~finetune.lr=0.1")


def test_removing_a_key_that_is_not_there_is_one_line(tmp_path):
    with pytest.raises(ConfigError, match=r"^override ~model.depth: params.yaml has no model.depth to remove$"):
        apply_overrides(shipped_copy(tmp_path), ["~model.depth"])


def test_removal_keeps_the_comments_that_follow(tmp_path):
    f = tmp_path / "params.yaml"
    f.write_text("seed: 0\nmodel:\n  backbone: tiny_cnn\n  backbone_args:\n    width: 8   # channels\n\n"
                 "# the training section\ntrain:\n  threads: 1\n")
    apply_overrides(f, ["~model.backbone_args.width"])
    assert f.read_text() == ("seed: 0\nmodel:\n  backbone: tiny_cnn\n  backbone_args: {}\n\n"
                             "# the training section\ntrain:\n  threads: 1\n")
    apply_overrides(f, ["model.backbone_args.width=16"])  # and back: the lines still follow the mapping
    assert f.read_text() == ("seed: 0\nmodel:\n  backbone: tiny_cnn\n  backbone_args:\n    width: 16\n\n"
                             "# the training section\ntrain:\n  threads: 1\n")


# ---------------------------------------------------------------- prepare.target_test_per_class and idx test files

def test_test_size_all_or_a_count():
    assert validate_params({"prepare": {"target_test_per_class": "all"}}).prepare.target_test_per_class == "all"
    assert validate_params({"prepare": {"target_test_per_class": 7}}).prepare.target_test_per_class == 7
    for bad in (0, "most", True, 2.5):
        line = one_error({"prepare": {"target_test_per_class": bad}})
        assert f"prepare.target_test_per_class = {bad!r}: expected a number" in line and "or all" in line


def test_idx_test_files_come_in_pairs():
    line = one_error({"ingest": {"target": {"kind": "idx", "images": "i", "labels": "l", "test_images": "t"}}})
    assert line.startswith("params.yaml: ingest.target: test_images needs test_labels")
