import torch
from torch import nn

from graft.data.synthetic import generate
from graft.models.backbones import create_backbone
from graft.models.classifier import GraftClassifier
from graft.training.device import Placement, placement_for
from graft.training.loop import Recipe, fit, predict_logits


def tiny_model():
    torch.manual_seed(0)
    return GraftClassifier(create_backbone("tiny_cnn", in_channels=3, image_size=16, width=8), 2)


def test_convolutional_models_train_in_channels_last_and_others_do_not():
    cpu = torch.device("cpu")
    assert placement_for(tiny_model(), cpu).memory_format == torch.channels_last
    assert placement_for(nn.Linear(4, 2), cpu).memory_format == torch.contiguous_format


def test_cpu_batches_stay_float32_and_on_the_host():
    place = placement_for(tiny_model(), torch.device("cpu"))
    images = torch.zeros(4, 3, 16, 16, dtype=torch.uint8)
    x = place.batch(images)
    assert x.dtype == torch.uint8 and x.is_contiguous(memory_format=torch.channels_last) and not x.is_pinned()
    with place.autocast():
        assert tiny_model()(x).dtype == torch.float32


def test_a_trained_model_comes_back_in_the_default_layout():
    data = generate(["circle_solid", "cross_checker"], 8, 16, 3, seed=0)
    model = tiny_model()
    fit(model, data, data, Recipe(epochs=1, lr=1e-3, batch_size=8), seed=0, stage="t", device=torch.device("cpu"))
    assert all(p.is_contiguous() for p in model.state_dict().values())


def test_layout_does_not_change_predictions_beyond_rounding():
    data = generate(["circle_solid", "cross_checker"], 8, 16, 3, seed=0)
    model = tiny_model()
    plain = predict_logits(model, data.images, 16, torch.device("cpu"))
    model.to(memory_format=torch.channels_last)
    cl = predict_logits(model, data.images, 16, Placement(torch.device("cpu"), torch.channels_last))
    torch.testing.assert_close(cl, plain, rtol=1e-4, atol=1e-5)
