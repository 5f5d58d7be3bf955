import torch

from graft.data.dataset import ImageDataset
from graft.data.synthetic import generate
from graft.models.backbones import create_backbone
from graft.models.classifier import GraftClassifier
from graft.training.loop import fit
from graft.training.recipe import Recipe
from graft.training.strategies import parameter_groups


def tiny_model(classes=2):
    torch.manual_seed(0)
    return GraftClassifier(create_backbone("tiny_cnn", in_channels=3, image_size=16, width=8), classes)


def test_fit_reduces_training_loss_and_reports_each_epoch():
    data = generate(["circle_solid", "cross_checker"], 32, 16, 3, seed=0)
    seen = []
    result = fit(tiny_model(), data, data, Recipe(epochs=4, lr=3e-3, batch_size=16), seed=0, stage="t",
                 device=torch.device("cpu"), on_epoch=seen.append)
    history = result.history
    assert [r["epoch"] for r in history] == [1, 2, 3, 4] and seen == history
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    expected = {"val_loss", "val_acc", "images_per_sec", "trainable_params", "phase", "lr_head", "lr_layer0"}
    assert expected <= set(history[0])
    assert result.kept_epoch == 4 and not result.stopped_early


def test_same_seed_same_result():
    data = generate(["circle_solid", "cross_checker"], 16, 16, 3, seed=0)
    runs = [fit(tiny_model(), data, data, Recipe(epochs=2, lr=1e-3, batch_size=8), seed=3, stage="t",
                device=torch.device("cpu")).history for _ in range(2)]
    assert runs[0] == [dict(r, images_per_sec=runs[0][i]["images_per_sec"]) for i, r in enumerate(runs[1])]


def test_no_weight_decay_on_norms_and_biases():
    groups = parameter_groups(tiny_model(), weight_decay=0.01)
    for g in groups:
        if g["name"].endswith("_no_decay"):
            assert g["weight_decay"] == 0.0 and all(p.ndim <= 1 for p in g["params"])
        else:
            assert g["weight_decay"] == 0.01 and all(p.ndim > 1 for p in g["params"])


def swapped_labels(data: ImageDataset) -> ImageDataset:
    """The same images with each label moved to the next class: the better a model fits the true labels, the
    worse it scores here, so as validation data it makes an early epoch the best one, never the last."""
    return ImageDataset(data.images, (data.labels + 1) % len(data.classes), data.classes)


def test_keep_best_returns_the_best_epochs_weights():
    data = generate(["circle_solid", "cross_checker"], 16, 16, 3, seed=0)
    model = tiny_model()
    snapshots = {}

    def remember(row):
        snapshots[row["epoch"]] = {k: v.clone() for k, v in model.state_dict().items()}

    result = fit(model, data, swapped_labels(data),
                 Recipe(epochs=5, lr=0.01, batch_size=8, keep="best", monitor="val_loss"),
                 seed=0, stage="t", device=torch.device("cpu"), on_epoch=remember)
    last = result.history[-1]["epoch"]
    best = min(result.history, key=lambda r: r["val_loss"])["epoch"]
    assert result.history[0]["train_loss"] > result.history[-1]["train_loss"]  # it did learn the training labels
    assert best < last, result.history  # else keeping the last epoch would pass too
    assert result.kept_epoch == best
    for k, v in model.state_dict().items():
        assert torch.equal(v, snapshots[best][k]), k
    assert any(not torch.equal(v, snapshots[last][k]) for k, v in model.state_dict().items())


def test_validate_every_scores_only_every_nth_epoch_and_the_last_and_keeps_the_best_of_those():
    data = generate(["circle_solid", "cross_checker"], 16, 16, 3, seed=0)
    model = tiny_model()
    snapshots, logged = {}, []

    def remember(row):
        logged.append(row)
        snapshots[row["epoch"]] = {k: v.clone() for k, v in model.state_dict().items()}

    result = fit(model, data, swapped_labels(data),
                 Recipe(epochs=7, lr=0.01, batch_size=8, keep="best", monitor="val_loss", validate_every=3),
                 seed=0, stage="t", device=torch.device("cpu"), on_epoch=remember)
    validated = [r["epoch"] for r in result.history if r["val_loss"] is not None]
    assert validated == [3, 6, 7], result.history
    assert all(r["val_acc"] is None for r in result.history if r["epoch"] not in validated)
    assert logged == result.history
    scored = [r for r in result.history if r["val_loss"] is not None]
    assert result.kept_epoch == min(scored, key=lambda r: r["val_loss"])["epoch"]
    for k, v in model.state_dict().items():
        assert torch.equal(v, snapshots[result.kept_epoch][k]), k


def test_early_stopping_with_validate_every_stops_at_a_validated_epoch_counting_epochs():
    data = generate(["circle_solid", "cross_checker"], 16, 16, 3, seed=0)
    result = fit(tiny_model(), data, swapped_labels(data),
                 Recipe(epochs=12, lr=0.01, batch_size=8, monitor="val_loss", patience=2, validate_every=2),
                 seed=0, stage="t", device=torch.device("cpu"))
    last = result.history[-1]
    assert result.stopped_early and last["epoch"] < 12, result.history
    assert last["epoch"] % 2 == 0 and last["val_loss"] is not None  # decided on a validation, never between
    best = min((r for r in result.history if r["val_loss"] is not None), key=lambda r: r["val_loss"])
    assert last["epoch"] - best["epoch"] >= 2  # patience counts epochs, validated or not
    assert result.kept_epoch == last["epoch"]  # keep: last
