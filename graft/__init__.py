"""graft: a transfer-learning pipeline for image classifiers, with every artifact tracked."""

__version__ = "0.1.0"
