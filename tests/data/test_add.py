"""`graft data add`: everything is checked before anything is copied; duplicates are skipped, clashes renamed."""

from __future__ import annotations

import re

import pytest
from PIL import Image

from graft.config import validate_params
from graft.data.add import apply_merge, plan_merge
from graft.data.dataset import DataError
from graft.data.sources import folder_fingerprint
from graft.paths import Paths
from graft.stages import ingest
from tests.conftest import tiny_params_dict


def params_with_target(target: dict):
    raw = tiny_params_dict()
    raw["ingest"]["target"] = target
    return validate_params(raw)


def write_folder(root, spec: dict[str, int], shade: int = 0):
    for cls, n in spec.items():
        (root / cls).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            Image.new("RGB", (20, 20), (shade + 10 * i, 80 if cls == "cats" else 160, 40)).save(root / cls / f"{i}.png")


def listing(root):
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


@pytest.fixture
def repo(tmp_path):
    write_folder(tmp_path / "data/sources/pets", {"cats": 3, "dogs": 3})
    return tmp_path


PETS = {"kind": "imagefolder", "path": "data/sources/pets"}


def test_merges_new_images_skips_duplicates_and_renames_clashes(repo, tmp_path):
    incoming = tmp_path / "incoming"
    write_folder(incoming, {"cats": 2})  # same bytes as cats/0.png and cats/1.png: duplicates
    Image.new("RGB", (20, 20), (1, 2, 3)).save(incoming / "cats" / "2.png")  # new bytes, taken name
    (incoming / "dogs").mkdir()
    Image.new("RGB", (20, 20), (9, 9, 9)).save(incoming / "dogs" / "fresh.png")

    plan = plan_merge(params_with_target(PETS), repo, incoming)
    assert [p.name for p in plan.duplicates] == ["0.png", "1.png"]
    copied = sorted(str(dst.relative_to(repo / "data/sources/pets")) for _, dst in plan.copies)
    assert len(copied) == 2 and copied[1] == "dogs/fresh.png"
    assert re.fullmatch(r"cats/2-[0-9a-f]{8}\.png", copied[0]), copied  # renamed, not overwritten
    before = (repo / "data/sources/pets/cats/2.png").read_bytes()
    apply_merge(plan)
    assert (repo / "data/sources/pets/cats/2.png").read_bytes() == before  # never overwritten
    assert len(listing(repo / "data/sources/pets")) == 8
    assert not list((repo / "data/sources/pets").rglob(".*graft-tmp"))
    again = plan_merge(params_with_target(PETS), repo, incoming)
    assert again.copies == [] and len(again.duplicates) == 4


def test_one_bad_image_and_nothing_is_copied(repo, tmp_path):
    incoming = tmp_path / "incoming"
    write_folder(incoming, {"cats": 2}, shade=100)
    (incoming / "cats" / "broken.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    before = listing(repo)
    with pytest.raises(DataError, match=r"(?s)cannot be read, so nothing was added.*broken.jpg"):
        plan_merge(params_with_target(PETS), repo, incoming)
    assert listing(repo) == before


def test_a_class_outside_the_configured_list_is_refused(repo, tmp_path):
    incoming = tmp_path / "incoming"
    write_folder(incoming, {"birds": 2})
    with pytest.raises(DataError, match=r"\['birds'\] are not in ingest.target.classes"):
        plan_merge(params_with_target({**PETS, "classes": ["cats", "dogs"]}), repo, incoming)


def test_new_classes_are_reported_when_no_list_is_configured(repo, tmp_path):
    incoming = tmp_path / "incoming"
    write_folder(incoming, {"birds": 2})
    assert plan_merge(params_with_target(PETS), repo, incoming).new_classes == ["birds"]


def test_a_synthetic_source_is_refused_with_how_to_switch(repo, tmp_path, tiny_params):
    write_folder(tmp_path / "incoming", {"cats": 1})
    with pytest.raises(DataError, match="synthetic source.*ingest.target.kind=imagefolder"):
        plan_merge(tiny_params, repo, tmp_path / "incoming")


def test_ingest_fingerprints_folders_outside_the_repository(tmp_path):
    """DVC cannot watch a folder outside the repository, so ingest records what it held for `graft retrain`."""
    outside = tmp_path / "incoming_feed"
    write_folder(outside, {"cats": 4, "dogs": 4})
    params = params_with_target({"kind": "imagefolder", "path": str(outside)})
    repo = tmp_path / "repo"
    ingest.run(params, Paths.at(repo))
    import json

    recorded = json.loads((repo / "data/raw/target.json").read_text())["source_fingerprint"]
    assert recorded == folder_fingerprint(outside)
    assert "source_fingerprint" not in json.loads((repo / "data/raw/source.json").read_text())  # synthetic
    Image.new("RGB", (20, 20), (5, 5, 5)).save(outside / "dogs" / "new.png")
    assert folder_fingerprint(outside) != recorded
