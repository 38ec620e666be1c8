"""Conventions every command line of the project shares (heart-train, heart-compare, heart-api).

Why one place: users compare ``--help`` screens, and small inconsistencies
between them (a default shown twice, none at all, an absolute path of the
machine that built the docs, a usage line naming a command they did not type)
are what made the help untrustworthy (issue 12).
"""

from __future__ import annotations

import argparse
import os
import sys
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

DISTRIBUTION = "heart-risk"


def package_version() -> str:
    """The installed distribution's version; ``0.0.0`` when run from an uninstalled tree."""
    try:
        return version(DISTRIBUTION)
    except PackageNotFoundError:
        return "0.0.0"


def prog_name(console_script: str, module: str) -> str:
    """The command as the user typed it, for usage lines.

    ``heart-train`` when started through the console script, ``python -m
    training`` when started as a module (``sys.argv[0]`` is then the module's
    ``__main__.py``), so the usage line can be copied back into the shell.
    """
    invoked = Path(sys.argv[0]).name if sys.argv and sys.argv[0] else ""
    if invoked in ("__main__.py", "-c", "") or invoked.endswith(".py"):
        return f"python -m {module}"
    return invoked if invoked == console_script else console_script


def add_version(parser: argparse.ArgumentParser) -> None:
    """``--version``: the package version, so a bug report can say what was run."""
    parser.add_argument(
        "--version",
        action="version",
        version=f"%(prog)s {package_version()}",
        help="print the version and exit",
    )


class HelpFormatter(argparse.HelpFormatter):
    """Show every option's default exactly once.

    ``ArgumentDefaultsHelpFormatter`` skips options without a help text and
    appends ``(default: None)`` even where the help already explains a computed
    default; this one appends ``(default: X)`` only where the help does not
    mention a default and the default is a real value, and prints paths as
    given (relative), never resolved.
    """

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if (
            "default" in text.lower()
            or default is None
            or default is argparse.SUPPRESS
            or isinstance(default, bool)
            or action.option_strings == []
            or action.nargs == 0
        ):
            return text
        shown = os.fspath(default) if isinstance(default, os.PathLike) else "%(default)s"
        return f"{text} (default: {shown})" if text else f"(default: {shown})"


#: Delimiters by a name that needs no quoting in a shell (a tab is hard to type).
_DELIMITER_NAMES = {"tab": "\t", "\\t": "\t", "semicolon": ";", "comma": ",", "pipe": "|"}


def _delimiter(text: str) -> str:
    char = _DELIMITER_NAMES.get(text.lower(), text)
    if len(char) != 1 or char.isalnum() or char in '"\r\n+-':
        raise argparse.ArgumentTypeError(
            f"{text!r}: one character that no number holds, such as ';' or '|', or 'tab'"
        )
    return char


def add_csv_dialect(parser: argparse.ArgumentParser) -> None:
    """``--delimiter`` and ``--decimal``: how a CSV export separates cells and decimals.

    Why: Excel writes "CSV" with the system's list separator, a semicolon wherever the
    decimal mark is a comma (much of Europe), even as "CSV UTF-8 (Comma delimited)".
    Every command that reads a hospital's CSV takes the same two options;
    :func:`check_csv_dialect` refuses a pair that cannot be read apart.
    """
    parser.add_argument(
        "--delimiter",
        type=_delimiter,
        default=",",
        metavar="CHAR",
        help="the character between a CSV file's cells: ';' for Excel's CSV where the "
        "decimal mark is a comma; 'tab' for a tab (default: ',')",
    )
    parser.add_argument(
        "--decimal",
        choices=[".", ","],
        default=".",
        metavar="MARK",
        help="the decimal mark of the CSV file's numbers, '.' or ','; with ',' a point in a "
        "number (1.234) is refused, not read as a decimal mark (default: '.')",
    )


def check_csv_dialect(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Exit with a usage error when the delimiter is the decimal mark: ``1,5,2`` would be
    two cells or one, a guess either way."""
    if args.delimiter == args.decimal:
        parser.error(
            f"--delimiter and --decimal are both {args.delimiter!r}: which separates cells "
            "and which decimals would be a guess (a comma decimal mark comes with "
            "--delimiter ';')"
        )
