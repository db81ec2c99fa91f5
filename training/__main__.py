"""``python -m training`` is ``resnet-train``."""

from training.train import cli

raise SystemExit(cli())
