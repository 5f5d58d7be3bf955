"""scikit-learn's bundled handwritten digits as a source kind: real images, no download."""

import pytest
import torch

from graft.config import ConfigError, validate_params
from graft.data.dataset import DataError
from graft.data.sklearn_digits import load_sklearn_digits
from graft.data.sources import load_source
from graft.paths import Paths
from graft.stages import ingest, prepare
from tests.conftest import merge, tiny_params_dict

DIGITS = {"ingest": {"source": {"kind": "sklearn_digits"}, "target": {"kind": "sklearn_digits"}},
          "data": {"channels": 1}}


def digits_params(**extra):
    raw = merge(tiny_params_dict(), DIGITS)
    for domain in ("source", "target"):
        raw["ingest"][domain] = {"kind": "sklearn_digits"}
    return validate_params(merge(raw, extra))


def test_loads_the_named_digits_resized_and_relabelled():
    from sklearn.datasets import load_digits

    ds = load_sklearn_digits(16, 3, ["7", "2"])
    target = load_digits().target
    assert ds.classes == ["7", "2"] and ds.images.shape == (int((target == 7).sum() + (target == 2).sum()), 3, 16, 16)
    assert ds.images.dtype == torch.uint8 and int(ds.images.max()) > 200  # 0..16 ink became 0..255
    assert set(ds.labels.tolist()) == {0, 1}
    with pytest.raises(DataError, match='digits "0" to "9"'):
        load_sklearn_digits(16, 1, ["10"])


def test_domains_default_to_0_4_and_5_9(tmp_path):
    params = digits_params()
    source, _ = load_source(params.ingest.source, "source", params, tmp_path)
    target, _ = load_source(params.ingest.target, "target", params, tmp_path)
    assert source.classes == ["0", "1", "2", "3", "4"] and target.classes == ["5", "6", "7", "8", "9"]


def test_overlapping_class_lists_are_refused():
    raw = merge(tiny_params_dict(), DIGITS)
    raw["ingest"] = {"source": {"kind": "sklearn_digits", "classes": ["1", "2"]},
                     "target": {"kind": "sklearn_digits", "classes": ["2", "3"]}}
    with pytest.raises(ConfigError, match=r"share classes \['2'\]"):
        validate_params(raw)


def test_ingest_and_prepare_on_real_digits(tmp_path):
    paths = Paths.at(tmp_path)
    params = digits_params()
    summary = ingest.run(params, paths)
    assert summary["source_classes"] == summary["target_classes"] == 5 and summary["source_images"] > 850
    prepared = prepare.run(params, paths)
    # tiny params: 4 labels, 4 validation and 8 test images per class
    assert (prepared["target_train"], prepared["target_val"], prepared["target_test"]) == (20, 20, 40)
