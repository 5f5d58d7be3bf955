import torch

from graft.data import synthetic


def test_default_domains_are_disjoint_and_large_enough():
    source, target = synthetic.default_classes("source"), synthetic.default_classes("target")
    assert len(source) >= 10 and len(target) >= 5
    assert not set(source) & set(target)
    # Every shape and texture the target uses is seen during pretraining: that is what transfers.
    for name in target:
        shape, texture = name.split("_")
        assert any(s.startswith(shape + "_") for s in source) and any(s.endswith("_" + texture) for s in source)


def test_deterministic_per_class_and_seeded():
    a = synthetic.generate(["circle_dots", "ring_solid"], 5, 32, 3, seed=0)
    b = synthetic.generate(["ring_solid"], 5, 32, 3, seed=0)
    c = synthetic.generate(["circle_dots", "ring_solid"], 5, 32, 3, seed=1)
    assert torch.equal(a.images[5:], b.images)  # a class's images do not depend on the other classes
    assert not torch.equal(a.images, c.images)
    assert a.images.dtype == torch.uint8 and a.images.shape == (10, 3, 32, 32)
    assert a.labels.tolist() == [0] * 5 + [1] * 5


def test_grey_and_other_sizes():
    ds = synthetic.generate(["square_checker"], 3, 20, 1, seed=0)
    assert ds.images.shape == (3, 1, 20, 20)


def test_classes_differ_in_content():
    """Class means differ: the images carry class information (not only noise)."""
    ds = synthetic.generate(["circle_solid", "cross_solid"], 64, 32, 1, seed=0)
    masks = [ds.images[ds.labels == i].float().std(dim=0).mean() for i in range(2)]
    assert all(m > 5 for m in masks)
    assert not torch.equal(ds.images[0], ds.images[64])


def test_unknown_class_is_a_clear_error():
    import pytest

    with pytest.raises(ValueError, match="unknown synthetic class 'blob_dots'"):
        synthetic.generate(["blob_dots"], 2, 16, 3, seed=0)


def test_shifted_style_draws_the_same_classes_differently():
    """Same class names, other images: busier backgrounds (more edges away from the shape), more noise."""
    standard = synthetic.generate(["circle_checker", "square_dots"], 64, 32, 3, seed=0)
    shifted = synthetic.generate(["circle_checker", "square_dots"], 64, 32, 3, seed=0, style="shifted")
    assert shifted.classes == standard.classes and shifted.images.shape == standard.images.shape
    assert not torch.equal(standard.images, shifted.images)

    def corner_edges(ds):  # the corners are background in nearly every image of both styles
        corner = ds.images[:, :, :6, :6].float()
        return (corner[..., 1:] - corner[..., :-1]).abs().mean()

    assert corner_edges(shifted) > 1.3 * corner_edges(standard)
    again = synthetic.generate(["square_dots"], 64, 32, 3, seed=0, style="shifted")
    assert torch.equal(again.images, shifted.images[64:])  # deterministic per class, like the standard style


def test_shifted_style_is_selectable_in_params_and_unknown_styles_are_refused():
    import pytest

    from graft.config import ConfigError, validate_params
    from tests.conftest import merge, tiny_params_dict

    params = validate_params(merge(tiny_params_dict(), {"ingest": {"target": {"style": "shifted"}}}))
    assert params.ingest.target.style == "shifted" and params.ingest.source.style == "standard"
    with pytest.raises(ConfigError, match="ingest.target.style"):
        validate_params(merge(tiny_params_dict(), {"ingest": {"target": {"style": "wobbly"}}}))
