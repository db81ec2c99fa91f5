"""``python -m experiments`` is ``resnet-experiment``."""

from experiments.cli import main

raise SystemExit(main())
