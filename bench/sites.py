"""``python -m bench.sites``: leave-one-site-out validation of the model on the UCI sites.

A thin entry point: the protocol lives in ``training/validation.py`` and the
report in ``training/site_report.py``. ``--quick`` runs a reduced protocol.
"""

from __future__ import annotations

from training.site_report import main

if __name__ == "__main__":
    raise SystemExit(main())
