import torch

from graft.data.synthetic import generate
from graft.models.backbones import create_backbone
from graft.models.classifier import GraftClassifier
from graft.training.loop import Recipe, fit, parameter_groups


def tiny_model(classes=2):
    torch.manual_seed(0)
    return GraftClassifier(create_backbone("tiny_cnn", in_channels=3, image_size=16, width=8), classes)


def test_fit_reduces_training_loss_and_reports_each_epoch():
    data = generate(["circle_solid", "cross_checker"], 32, 16, 3, seed=0)
    seen = []
    history = fit(tiny_model(), data, data, Recipe(epochs=4, lr=3e-3, batch_size=16), seed=0, stage="t",
                  device=torch.device("cpu"), on_epoch=seen.append)
    assert [r["epoch"] for r in history] == [1, 2, 3, 4] and seen == history
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    assert {"val_loss", "val_acc", "images_per_sec", "trainable_params", "lr_decay"} <= set(history[0])


def test_same_seed_same_result():
    data = generate(["circle_solid", "cross_checker"], 16, 16, 3, seed=0)
    runs = [fit(tiny_model(), data, data, Recipe(epochs=2, lr=1e-3, batch_size=8), seed=3, stage="t",
                device=torch.device("cpu")) for _ in range(2)]
    assert runs[0] == [dict(r, images_per_sec=runs[0][i]["images_per_sec"]) for i, r in enumerate(runs[1])]


def test_no_weight_decay_on_norms_and_biases():
    groups = parameter_groups(tiny_model(), lr=0.1, weight_decay=0.01)
    decay, no_decay = groups
    assert decay["weight_decay"] == 0.01 and no_decay["weight_decay"] == 0.0
    assert all(p.ndim > 1 for p in decay["params"]) and all(p.ndim <= 1 for p in no_decay["params"])
