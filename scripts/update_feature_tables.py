"""Rewrite the feature tables in docs/api.md and data/README.md from model/features.py.

The tables sit between ``<!-- features-table:start -->`` and ``<!-- features-table:end -->``;
tests/model/test_features.py fails when they drift, and this script is the fix.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from model.features import markdown_table

PATTERN = re.compile(r"(<!-- features-table:start -->\n).*?(<!-- features-table:end -->)", re.S)


def main() -> int:
    root = Path(__file__).resolve().parents[1]
    for doc in (root / "docs" / "api.md", root / "data" / "README.md"):
        text = doc.read_text(encoding="utf-8")
        new = PATTERN.sub(lambda m: m.group(1) + markdown_table() + "\n" + m.group(2), text)
        if new != text:
            doc.write_text(new, encoding="utf-8")
            print(f"updated {doc.relative_to(root)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
