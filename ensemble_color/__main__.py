"""``python -m ensemble_color``: see :mod:`ensemble_color.cli`."""

from .cli import main

raise SystemExit(main())
