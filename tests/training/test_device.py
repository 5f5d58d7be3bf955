import torch
from torch import nn

from graft.data.synthetic import generate
from graft.models.backbones import create_backbone
from graft.models.classifier import GraftClassifier
from graft.training.device import Placement, placement_for
from graft.training.loop import fit, predict_logits
from graft.training.recipe import Recipe


def tiny_model():
    torch.manual_seed(0)
    return GraftClassifier(create_backbone("tiny_cnn", in_channels=3, image_size=16, width=8), 2)


def test_convolutional_models_train_in_channels_last_and_others_do_not():
    cpu = torch.device("cpu")
    assert placement_for(tiny_model(), cpu).memory_format == torch.channels_last
    assert placement_for(nn.Linear(4, 2), cpu).memory_format == torch.contiguous_format


def test_cpu_batches_stay_uint8_on_the_host_and_the_model_computes_in_float32():
    """On the CPU, Placement.batch moves nothing: the images stay uint8 (the model normalises them), in the
    model's layout, unpinned; there is no autocast, so the forward pass is float32 throughout."""
    place = placement_for(tiny_model(), torch.device("cpu"))
    images = torch.zeros(4, 3, 16, 16, dtype=torch.uint8)
    x = place.batch(images)
    assert x.dtype == torch.uint8 and x.device.type == "cpu" and not x.is_pinned()
    assert x.is_contiguous(memory_format=torch.channels_last)
    labels = place.batch(torch.zeros(4, dtype=torch.int64))
    assert labels.dtype == torch.int64 and labels.device.type == "cpu"
    model = tiny_model()
    seen = []
    model.head.register_forward_hook(lambda module, args, out: seen.append((args[0].dtype, out.dtype)))
    with place.autocast():
        assert not torch.is_autocast_enabled("cpu")
        assert model(x).dtype == torch.float32
    assert seen == [(torch.float32, torch.float32)]  # the head's input (the features) and output


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
