"""The one way this project writes a file that others may read at any moment.

The artifact, the training report, the loss plot and the comparison tables are
all read by other processes (the service, CI, a reader refreshing a page). A
crash or Ctrl-C mid-write must leave the previous file (or none), never half
of one: the content goes to a temporary file in the same directory, reaches
the disk, and replaces the target with one atomic ``os.replace``.
"""

from __future__ import annotations

import contextlib
import errno
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path to write; on success it replaces ``path`` in one step.

    The temporary file is in the target's directory (a rename is only atomic
    within one filesystem) and is removed if the block raises.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        with tmp.open("rb") as fh:
            os.fsync(fh.fileno())
        # mkstemp creates 0600; these files are meant to be read by other users
        # (the artifact by the non-root service user).
        tmp.chmod(0o644)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def write_text_atomic(path: str | os.PathLike[str], text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically; return the path written."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def same_file(a: str | os.PathLike[str], b: str | os.PathLike[str]) -> bool:
    """Whether two paths name one file, existing or not (through links and ``..``).

    Why: a command that writes its output by replacing the target would replace its
    own input when both are one file (``heart-score registry.csv registry.csv``): the
    patients' file gone, scores in its place, and an exit status of 0.
    """
    try:
        return os.path.samefile(a, b)
    except OSError:  # one of them does not exist (yet): compare where they would be
        return Path(a).resolve() == Path(b).resolve()


class CannotWriteError(Exception):
    """A file the user named could not be written (permission, no such directory, a full
    disk). The message names that file rather than the temporary one beside it that the
    failed call names (``.scores.csv.partial``), which the user never asked for."""

    def __init__(self, path: str | os.PathLike[str], exc: OSError) -> None:
        # Creating the directories on the path is the only step that meets an existing
        # file: one of them is a file ("File exists" would say the opposite of the fix).
        code = errno.ENOTDIR if isinstance(exc, FileExistsError) else exc.errno
        reason = os.strerror(code) if code else str(exc)
        super().__init__(f"cannot write {os.fspath(path)}: {reason}")


def cannot_write(path: str | os.PathLike[str]) -> str | None:
    """Why ``path`` could not be written, found before the work that produces it; else None.

    A command that trains for minutes and only then meets a directory named as
    its output, or a directory it may not write, wastes the run and ends in a
    traceback. This tries what :func:`atomic_path` will do (create the parent
    directories and a temporary file beside the target), then removes the file.
    """
    target = Path(path)
    if target.is_dir():
        return f"cannot write {os.fspath(path)}: Is a directory"
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    except OSError as exc:
        return str(CannotWriteError(path, exc))
    os.close(fd)
    discard(name)
    return None


def finish_partial(
    tmp: str | os.PathLike[str],
    path: str | os.PathLike[str],
    close: Callable[[], None],
    *,
    success: bool,
) -> None:
    """Close the stream that wrote ``tmp``, then put ``tmp`` in ``path``'s place, or remove it.

    For outputs written as they are produced (``heart-score``'s scores and its
    ``--errors`` file), where :func:`atomic_path`'s one block does not fit. The
    close is where a compressed file's trailer and the last flush are written, so
    a full disk can strike there; either failure names ``path``, not ``tmp``, and
    leaves no partial file. Without ``success`` the run is already failing: a
    failed close is not reported over the first error.
    """
    try:
        close()
    except OSError as exc:
        discard(tmp)
        if success:
            raise CannotWriteError(path, exc) from None
        return
    if not success:
        discard(tmp)
        return
    try:
        os.replace(tmp, path)
    except OSError as exc:  # the output's name is a directory, say
        discard(tmp)
        raise CannotWriteError(path, exc) from None


def discard(path: str | os.PathLike[str]) -> None:
    """Remove a temporary file if it is there. ``unlink(missing_ok=True)`` still raises when
    the file could never have been made (its directory is a file: ``NotADirectoryError``),
    and raised while cleaning up, that would hide why the write failed."""
    with contextlib.suppress(FileNotFoundError, NotADirectoryError):
        os.unlink(path)
