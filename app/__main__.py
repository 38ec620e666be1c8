"""``python -m app ...`` is the ``heart-api`` command."""

from app.cli import main

raise SystemExit(main())
