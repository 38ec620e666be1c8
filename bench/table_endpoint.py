"""``python -m bench.table_endpoint``: the load benchmark's ``/predict/table`` scenarios alone.

Issue 13's figure, rows per worker CPU-second of Arrow and CSV uploads against the
JSON batch of the same worker and run, is part of ``python -m bench.load``; this
keeps its command (``--rounds 3 --seconds 4``): the batch and the two uploads at two
wrk connections, into ``bench/results/table_endpoint.{md,json}``.
Any other option of the load benchmark passes through.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Sequence

from bench import load

SCENARIOS = ("batch", "table-arrow", "table-csv")


def main(argv: Sequence[str] | None = None) -> int:
    given = sys.argv[1:] if argv is None else argv
    preset = ["--name", "table_endpoint", "--warmup", "1", "--duration", "4"]
    preset += ["--batch-concurrency", "2", *(f"--only={name}" for name in SCENARIOS)]
    return load.main([*preset, *(re.sub(r"^--seconds\b", "--duration", a) for a in given)])


if __name__ == "__main__":
    raise SystemExit(main())
