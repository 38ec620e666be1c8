"""The curl examples of the docs, read one way for every check that runs them.

The e2e test (tests/e2e/test_e2e_readme.py) runs them against a server started
from source; scripts/container-check.py runs them against the container and
the source service and compares the answers. Both must see the same examples,
so both import this module. Standard library only: the container check runs
with the host's python3, outside the project's virtualenv.

An example is a ```bash block of an API section (between ``<!-- api:begin``
and ``<!-- api:end -->``) that calls curl, followed by a ```json or ```text
block showing its answer. docs/api.md holds the reference and its examples;
the README's first screen shows one of them, checked the same way.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Final

_ROOT: Final[Path] = Path(__file__).resolve().parents[1]
#: The API reference: its section holds the examples, the configuration table and the key.
API_DOC: Final[Path] = _ROOT / "docs" / "api.md"
#: Every document with API sections whose examples must run as written.
EXAMPLE_DOCS: Final[tuple[Path, ...]] = (_ROOT / "README.md", API_DOC)
#: Where the examples send their requests; checks point it at their own server.
README_HOST: Final[str] = "localhost:8000"
BEGIN, END = "<!-- api:begin", "<!-- api:end -->"
FENCE: Final = re.compile(r"^```(\w*)\n(.*?)^```\n", re.MULTILINE | re.DOTALL)


@dataclass(frozen=True)
class Example:
    """A curl example, the kind (``json`` or ``text``) and text of its answer, and where."""

    command: str
    expected_kind: str
    expected: str
    doc: str
    line: int

    @property
    def where(self) -> str:
        return f"{self.doc} line {self.line}"

    @property
    def needs_key(self) -> bool:
        """Examples that show the API key at work run against a server that requires one."""
        return "X-API-Key" in self.command or "invalid API key" in self.expected


def api_section(path: Path = API_DOC) -> tuple[str, int]:
    """The first API section's text and the number of lines before it (for line numbers)."""
    return next(_api_sections(path))


def _api_sections(path: Path) -> Iterator[tuple[str, int]]:
    text = path.read_text(encoding="utf-8")
    start = text.find(BEGIN)
    if start < 0:
        raise ValueError(f"{path} has no API section ({BEGIN} ... {END})")
    while start >= 0:
        end = text.index(END, start)
        yield text[start:end], text[:start].count("\n")
        start = text.find(BEGIN, end)


def curl_examples(*paths: Path) -> list[Example]:
    """Every curl example of the API sections of ``paths`` (default: EXAMPLE_DOCS), in order.

    Raises ValueError when a curl block is not followed by its answer: an
    example that shows no answer cannot be checked, so it is a doc bug.
    """
    examples = []
    for path in paths or EXAMPLE_DOCS:
        for section, offset in _api_sections(path):
            blocks = [
                (m.group(1), m.group(2), offset + section[: m.start()].count("\n") + 1)
                for m in FENCE.finditer(section)
            ]
            for (kind, body, line), following in zip(blocks, [*blocks[1:], None], strict=True):
                if kind != "bash" or "curl " not in body:
                    continue
                if following is None or following[0] not in ("json", "text"):
                    raise ValueError(
                        f"{path.name} line {line}: a curl example needs its answer after it"
                    )
                examples.append(Example(body, following[0], following[1], path.name, line))
    return examples


def api_key(path: Path = API_DOC) -> str | None:
    """The API key the examples use (from the ``HEART_API_KEY=... heart-api serve`` line)."""
    section, _ = api_section(path)
    match = re.search(r"HEART_API_KEY=(\S+) heart-api serve", section)
    return match.group(1) if match else None
