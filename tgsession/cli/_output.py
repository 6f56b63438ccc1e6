"""The file an export is written to: owner-only, and never one that another user chose.

An export holds every session, so it is created owner-only, as the store's own files are,
and the path it is written to must not lead anywhere another user decided: not to their file
or pipe (they would read every session), and not through their symbolic link (it could point
at any file this user may write, which the export would then overwrite).
"""

from __future__ import annotations

import errno
import fcntl
import os
import stat
import sys
from typing import IO

from ._stores import CommandError

# Names of standard output: written as it is, as "-" is (appended to, if it was opened so).
_STDOUT = ("-", "/dev/stdout", "/dev/fd/1", "/proc/self/fd/1")
_DIRECTORY = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
# Not waiting for a pipe's reader, not emptying anything before it is checked.
_CREATE = os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
_LINKS_AT_MOST = 40  # as the kernel's limit


def open_export(path: str, store: str | None) -> IO[bytes]:
    """Open ``path`` for an export of the store in the directory ``store`` (None: not on
    disk); standard output for ``-``.

    Refused: a path through a symbolic link of another user (this user's and root's are
    followed), a file of the store, a file, pipe or socket of another user, a pipe that
    nobody reads (rather than waiting on it). A regular file is made owner-only and emptied
    only once open and checked. A terminal or ``/dev/null`` is written as it is.
    """
    if os.path.normpath(path) in _STDOUT:
        return sys.stdout.buffer
    if not path or path.endswith("/"):
        raise CommandError(f"{path!r} names no file to write the export to")
    stores_files = set() if store is None else _files_of(store)
    descriptor = _create(path)
    try:
        info = os.fstat(descriptor)
        if (info.st_dev, info.st_ino) in stores_files:
            raise CommandError(f"{path} is a file of the store itself: write the export elsewhere")
        if not stat.S_ISCHR(info.st_mode) and info.st_uid != os.geteuid():
            raise CommandError(
                f"{path} belongs to another user, so the export could not be owner-only: "
                "write it to a new file"
            )
        if stat.S_ISREG(info.st_mode):
            os.fchmod(descriptor, 0o600)  # an existing file of ours keeps its mode otherwise
            os.ftruncate(descriptor, 0)
        flags = fcntl.fcntl(descriptor, fcntl.F_GETFL)
        fcntl.fcntl(descriptor, fcntl.F_SETFL, flags & ~os.O_NONBLOCK)  # writes may wait
    except BaseException:
        os.close(descriptor)
        raise
    return os.fdopen(descriptor, "wb")


def _create(path: str) -> int:
    """Open ``path`` for writing, creating it owner-only, one component at a time: each is
    opened relative to the directory opened before it and without following a link, and a
    link met on the way is followed only once checked (see _link). A directory on the way
    renamed or replaced meanwhile changes nothing: what is opened is what was checked."""
    pending = [part for part in path.split("/") if part not in ("", ".")][::-1]
    at = os.open("/" if path.startswith("/") else ".", _DIRECTORY)
    links = 0
    try:
        while pending:
            part = pending.pop()
            target = _link(at, part, path)
            if target is not None:
                links += 1
                if links > _LINKS_AT_MOST:
                    raise CommandError(f"{path} goes through too many symbolic links")
                if target.startswith("/"):
                    os.close(at)
                    at = os.open("/", _DIRECTORY)
                pending.extend(p for p in reversed(target.split("/")) if p not in ("", "."))
                continue
            if not pending:
                return _open_file(at, part, path)
            inner = os.open(part, _DIRECTORY, dir_fd=at)
            os.close(at)
            at = inner
        raise CommandError(f"{path} names a directory, not a file to write the export to")
    finally:
        os.close(at)


def _link(at: int, name: str, path: str) -> str | None:
    """The target of ``name`` in the directory ``at`` if it is a symbolic link (None if it is
    not, or is not there); CommandError if it is another user's. Its owner and its target
    are read from one descriptor of the link itself, so it cannot be swapped in between."""
    try:
        if hasattr(os, "O_PATH"):
            link = os.open(name, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=at)
            try:
                info = os.fstat(link)
                target = os.readlink("", dir_fd=link) if stat.S_ISLNK(info.st_mode) else None
            finally:
                os.close(link)
        else:  # no O_PATH (not Linux): as close as the system allows
            info = os.stat(name, dir_fd=at, follow_symlinks=False)
            target = os.readlink(name, dir_fd=at) if stat.S_ISLNK(info.st_mode) else None
    except FileNotFoundError:
        return None
    if target is not None and info.st_uid not in (os.geteuid(), 0):
        raise CommandError(
            f"{path} goes through {name!r}, a symbolic link of another user, which could point "
            "at any of your files: it is not followed; write the export elsewhere"
        )
    return target


def _open_file(at: int, name: str, path: str) -> int:
    try:
        return os.open(name, _CREATE, 0o600, dir_fd=at)
    except OSError as error:
        if error.errno == errno.ENXIO:  # O_NONBLOCK's answer for a pipe without a reader
            raise CommandError(
                f"{path} is a pipe that nobody reads, or a socket: write the export elsewhere"
            ) from None
        raise


def _files_of(store: str) -> set[tuple[int, int]]:
    """The device and inode of every file in the store's directory."""
    found = set()
    for directory, _, names in os.walk(store):
        for name in names:
            try:
                info = os.stat(os.path.join(directory, name), follow_symlinks=False)
            except OSError:
                continue
            found.add((info.st_dev, info.st_ino))
    return found
