"""``python -m scoring``: the same command as ``heart-score``."""

from scoring.cli import main

raise SystemExit(main())
