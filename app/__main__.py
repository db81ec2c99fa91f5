"""``python -m app``: the same as ``resnet-serve``."""

from app.cli import main

raise SystemExit(main())
