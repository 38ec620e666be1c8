"""The curl examples of the API reference, read one way for every check that runs them.

The e2e test (tests/e2e/test_e2e_readme.py) runs them against a server started
from source; scripts/container-check.py runs them against the container and
the source service and compares the answers. Both must see the same examples,
so both import this module. Standard library only: the container check runs
with the host's python3, outside the project's virtualenv.

An example is a ```bash block of the API section (between ``<!-- api:begin``
and ``<!-- api:end -->``) that calls curl, followed by a ```json or ```text
block showing its answer.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Final

#: The document whose API section holds the examples.
API_DOC: Final[Path] = Path(__file__).resolve().parents[1] / "README.md"
#: Where the examples send their requests; checks point it at their own server.
README_HOST: Final[str] = "localhost:8000"
BEGIN, END = "<!-- api:begin", "<!-- api:end -->"
FENCE: Final = re.compile(r"^```(\w*)\n(.*?)^```\n", re.MULTILINE | re.DOTALL)


@dataclass(frozen=True)
class Example:
    """A curl example, the kind (``json`` or ``text``) and text of its answer, its line."""

    command: str
    expected_kind: str
    expected: str
    line: int

    @property
    def needs_key(self) -> bool:
        """Examples that show the API key at work run against a server that requires one."""
        return "X-API-Key" in self.command or "invalid API key" in self.expected


def api_section(path: Path = API_DOC) -> tuple[str, int]:
    """The API section's text and the number of lines before it (for line numbers)."""
    text = path.read_text(encoding="utf-8")
    start, end = text.index(BEGIN), text.index(END)
    return text[start:end], text[:start].count("\n")


def curl_examples(path: Path = API_DOC) -> list[Example]:
    """Every curl example of the API section, in document order.

    Raises ValueError when a curl block is not followed by its answer: an
    example that shows no answer cannot be checked, so it is a doc bug.
    """
    section, offset = api_section(path)
    blocks = [
        (m.group(1), m.group(2), offset + section[: m.start()].count("\n") + 1)
        for m in FENCE.finditer(section)
    ]
    examples = []
    for (kind, body, line), following in zip(blocks, [*blocks[1:], None], strict=True):
        if kind != "bash" or "curl " not in body:
            continue
        if following is None or following[0] not in ("json", "text"):
            raise ValueError(
                f"{path.name} line {line}: a curl example must be followed by its answer"
            )
        examples.append(Example(body, following[0], following[1], line))
    return examples


def api_key(path: Path = API_DOC) -> str | None:
    """The API key the examples use (from the ``HEART_API_KEY=... heart-api serve`` line)."""
    section, _ = api_section(path)
    match = re.search(r"HEART_API_KEY=(\S+) heart-api serve", section)
    return match.group(1) if match else None
