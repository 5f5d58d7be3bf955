from graft.files import write_history
from graft.plots import learning_curves, read_history


def test_learning_curves_draw_epochs_that_validate_every_skipped(tmp_path):
    """With validate_every > 1 the CSV has empty validation cells; the figure plots the validated epochs only."""
    rows = [{"epoch": e, "train_loss": 2.0 / e, "train_acc": 0.2 * e,
             "val_loss": 1.5 / e if e % 2 == 0 else None, "val_acc": 0.15 * e if e % 2 == 0 else None}
            for e in range(1, 5)]
    write_history(tmp_path / "pretrain.csv", rows)
    read = read_history(tmp_path / "pretrain.csv")
    assert [("val_loss" in r) for r in read] == [False, True, False, True]
    out = learning_curves({"pretrain": read}, tmp_path / "curves.png")
    assert out.read_bytes()[:4] == b"\x89PNG"
