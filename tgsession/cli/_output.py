"""The file an export is written to: owner-only, and never one that another user chose.

An export holds every session, so it is created owner-only, as the store's own files are,
and the path it is written to must not lead anywhere another user decided: not to their file
or pipe (they would read every session), and not through their symbolic link (it could point
at any file this user may write, which the export would overwrite).
"""

from __future__ import annotations

import errno
import fcntl
import os
import stat
import sys
from collections.abc import Iterator
from typing import IO

from ._stores import CommandError

# Names of standard output: written as it is, as "-" is (appended to, if it was opened so).
_STDOUT = ("-", "/dev/stdout", "/dev/fd/1", "/proc/self/fd/1")


def open_export(path: str, store: str | None) -> IO[bytes]:
    """Open ``path`` for an export of the store in the directory ``store`` (None: not on
    disk); standard output for ``-``.

    Refused: a path through a symbolic link of another user (root's are followed), the
    store's own directory, a file, pipe or socket of another user. A regular file is made
    owner-only and emptied only once open and checked, so nothing swapped in meanwhile is
    emptied; a pipe nobody reads is refused rather than waited on. A terminal or
    ``/dev/null`` is written as it is.
    """
    if path in _STDOUT:
        return sys.stdout.buffer
    for link, info in _links_on(path):
        if info.st_uid not in (os.geteuid(), 0):
            raise CommandError(
                f"{path} goes through {link}, a symbolic link of another user, which could "
                "point at any of your files: it is not followed; write the export elsewhere"
            )
    if store is not None and os.path.realpath(os.path.dirname(os.path.abspath(path))) == store:
        raise CommandError(f"{path} is in the store's own directory: write the export elsewhere")
    # Not following a link at the end (one put there since the check), not waiting for a
    # pipe's reader, not emptying anything before it is checked.
    flags = os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC | os.O_NONBLOCK
    if not os.path.islink(path):
        flags |= os.O_NOFOLLOW
    try:
        descriptor = os.open(path, flags, 0o600)
    except OSError as error:
        if error.errno == errno.ENXIO:  # what O_NONBLOCK gives for a pipe without a reader
            raise CommandError(f"{path} is a pipe that nobody reads") from None
        raise
    try:
        info = os.fstat(descriptor)
        kind = info.st_mode
        if not stat.S_ISCHR(kind) and info.st_uid != os.geteuid():
            raise CommandError(
                f"{path} belongs to another user, so the export could not be owner-only: "
                "write it to a new file"
            )
        if stat.S_ISREG(kind):
            os.fchmod(descriptor, 0o600)  # an existing file of ours keeps its mode otherwise
            os.ftruncate(descriptor, 0)
        flags = fcntl.fcntl(descriptor, fcntl.F_GETFL)
        fcntl.fcntl(descriptor, fcntl.F_SETFL, flags & ~os.O_NONBLOCK)  # writes may wait
    except BaseException:
        os.close(descriptor)
        raise
    return os.fdopen(descriptor, "wb")


def _links_on(path: str) -> Iterator[tuple[str, os.stat_result]]:
    """Every symbolic link that opening ``path`` would go through, with its lstat, in the
    order they are met (a link to a link yields both)."""
    pending = [part for part in os.path.abspath(path).split("/") if part][::-1]
    at = "/"
    hops = 0
    while pending:
        part = pending.pop()
        if part == "..":
            at = os.path.dirname(at)
            continue
        here = os.path.join(at, part)
        try:
            info = os.lstat(here)
        except OSError:  # missing (to be created) or unreadable: the open will say
            at = here
            continue
        if not stat.S_ISLNK(info.st_mode):
            at = here
            continue
        yield here, info
        hops += 1
        if hops > 40:  # as the kernel's limit: the open will fail with ELOOP
            return
        target = os.readlink(here)
        if target.startswith("/"):
            at = "/"
        pending.extend(part for part in reversed(target.split("/")) if part and part != ".")
