"""Web demo of the ensemble_color colouriser: ``python app.py [--port 7860] [--host 127.0.0.1]``.

A thin launcher so the demo starts from a checkout without installing; the page and its options
live in :mod:`ensemble_color.app` (also reachable as ``python -m ensemble_color serve``).
"""

from ensemble_color.app import main

if __name__ == "__main__":
    raise SystemExit(main())
