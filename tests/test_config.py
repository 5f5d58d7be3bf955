from pathlib import Path

import pytest
import yaml

from graft.config import BACKBONE_NAMES, ConfigError, apply_overrides, load_params, parse_override, validate_params

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
