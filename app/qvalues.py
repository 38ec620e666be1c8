"""The elements of an ``Accept`` or ``Accept-Encoding`` header, each with its q-value.

Three negotiations read such lists (the table's answer format, the metrics
format, the answer's compression); one parser keeps them agreeing on what a
q-value is. RFC 9110 12.4.2: 0 to 1 with at most three decimals. Anything
else (``q=nan``, ``q=inf``, ``q=2``, ``q=abc``) makes the element invalid:
Python's ``float`` reads ``nan`` and ``inf``, which would sort first.
Parameter names are case-insensitive (``Q=`` is ``q=``, RFC 9110 5.6.6).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Final

_QVALUE: Final = re.compile(r"0(\.[0-9]{0,3})?|1(\.0{0,3})?")


def elements(header: str) -> Iterator[tuple[str, float | None, str]]:
    """``(name, q, element)`` per comma-separated element, in order.

    ``name`` is the media range or coding, stripped and lower-cased; ``q`` is
    1.0 without a q parameter and None when the q is not a qvalue; ``element``
    is the element as sent (stripped), for a message that names it.
    """
    for part in header.split(","):
        element = part.strip()
        name, _, params = element.partition(";")
        quality: float | None = 1.0
        for param in params.split(";"):
            key, _, value = param.strip().partition("=")
            if key.strip().lower() == "q":
                value = value.strip()
                quality = float(value) if _QVALUE.fullmatch(value) else None
        yield name.strip().lower(), quality, element
