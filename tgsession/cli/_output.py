"""The file an export is written to: owner-only, and never one that another user chose.

An export holds every session, so it is written owner-only, as the store's own files are,
and the path it is written to must not lead anywhere another user decided: not to their file
or pipe (they would read every session), not through their symbolic link (it could point at
any file this user may write), and not into a file they may already hold open.

A file is written as a new file beside it, put in its place once the export is complete: a
reader who opened the old one never sees the export, another name of the old file (a hard
link) keeps the old content, and an export that fails leaves the old file as it was.
"""

from __future__ import annotations

import errno
import fcntl
import os
import secrets
import stat
import sys
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from typing import IO

from ._stores import CommandError

# O_PATH where there is one: a directory on the way may be one this user can enter, not read.
_DIRECTORY = getattr(os, "O_PATH", os.O_RDONLY) | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
# A pipe, socket or device as it is: not waiting for a reader, not following a link.
_SPECIAL = os.O_WRONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
_LINKS_AT_MOST = 40  # as the kernel's limit


@contextmanager
def open_export(path: str, store: str | None) -> Iterator[IO[bytes]]:
    """The output of an export to ``path`` of the store in the directory ``store`` (None: not
    on disk), for the block: standard output for ``-`` or the file it goes to.

    Refused: a path through a symbolic link of another user (this user's and root's are
    followed), a file of the store, a file, pipe or socket of another user, a pipe that
    nobody reads (rather than waiting on it). A file is replaced when the block ends without
    an error (see the module's docstring); a pipe, socket or device is written as it is.
    """
    if path == "-" or _is_stdout(path):
        if sys.stdout is None:
            raise CommandError("standard output is closed: give the export a file (-o FILE)")
        yield sys.stdout.buffer
        return
    last = path.rstrip("/").rsplit("/", 1)[-1]
    if not path or path.endswith("/") or last in (".", ".."):
        raise CommandError(f"{path!r} names a directory, not a file to write the export to")
    stores_files = set() if store is None else _files_of(store)
    at, name, special = _walk(path)
    try:
        there = None
        if not special:
            if _at_proc(at):
                raise CommandError(f"{path} names no open file or pipe in /proc")
            with suppress(FileNotFoundError):
                there = os.stat(name, dir_fd=at, follow_symlinks=False)
        # A pipe or the like (through /proc's links, /dev/fd/N, too) is written as it is.
        if special or (there is not None and not stat.S_ISREG(there.st_mode)):
            with _opened_special(name, at, path) as output:
                yield output
            return
        if there is not None and (there.st_dev, there.st_ino) in stores_files:
            raise CommandError(f"{path} is a file of the store itself: write the export elsewhere")
        if there is not None and there.st_uid != os.geteuid():
            raise CommandError(f"{path} belongs to another user: write the export elsewhere")
        with _replacing(name, at, exists=there is not None) as output:
            yield output
    finally:
        os.close(at)


def _is_stdout(path: str) -> bool:
    """Whether ``path`` is the file or pipe standard output goes to (/dev/stdout, say): then
    it is written through standard output, appended to if the shell opened it so."""
    if sys.stdout is None:  # closed by the shell (>&-)
        return False
    try:
        here, there = os.fstat(sys.stdout.fileno()), os.stat(path)
    except (OSError, ValueError):
        return False
    return (here.st_dev, here.st_ino) == (there.st_dev, there.st_ino)


@contextmanager
def _replacing(name: str, at: int, exists: bool) -> Iterator[IO[bytes]]:
    """A new owner-only file in the directory ``at``, put in place of ``name`` when the block
    ends without an error (renamed over it if it ``exists``, else linked to it, which fails
    if a file appeared there meanwhile), and removed if the block raises."""
    temporary = f".tgsession-export-{secrets.token_hex(8)}"  # short: any legal name fits
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        descriptor = os.open(temporary, flags, 0o600, dir_fd=at)
    except PermissionError:
        raise CommandError(
            f"cannot create a file beside {name!r} (an export is written as a new file, then "
            "put in its place): write the export to a directory you can write"
        ) from None
    try:
        with os.fdopen(descriptor, "wb") as output:
            yield output
            output.flush()
            os.fsync(output.fileno())  # complete on disk before it replaces anything
        if exists or not _linked(temporary, name, at):
            os.rename(temporary, name, src_dir_fd=at, dst_dir_fd=at)
    finally:
        with suppress(OSError):
            os.unlink(temporary, dir_fd=at)


def _linked(temporary: str, name: str, at: int) -> bool:
    """Give ``temporary`` the new ``name`` too, unless a file appeared there meanwhile
    (CommandError); False where there are no hard links (vfat, say) and nothing is there:
    a rename then does, which replaces a file appearing in the instant between the two."""
    try:
        os.link(temporary, name, src_dir_fd=at, dst_dir_fd=at, follow_symlinks=False)
        return True
    except OSError as error:
        if error.errno in (errno.EPERM, errno.EOPNOTSUPP, errno.ENOSYS):
            try:
                os.stat(name, dir_fd=at, follow_symlinks=False)
            except FileNotFoundError:
                return False
        elif error.errno != errno.EEXIST:
            raise
    raise CommandError(
        f"{name!r} appeared while the export was written: it is left as it is; export again"
    )


@contextmanager
def _opened_special(name: str, at: int, path: str) -> Iterator[IO[bytes]]:
    """``name`` in ``at`` opened as it is: a pipe, socket or device (a terminal,
    /dev/null), not a regular file, and not another user's, but a device's."""
    flags = _SPECIAL & ~os.O_NOFOLLOW if _at_proc(at) else _SPECIAL
    try:
        descriptor = os.open(name, flags, dir_fd=at)
    except OSError as error:
        if error.errno == errno.ENXIO:  # O_NONBLOCK's answer for a pipe without a reader
            raise CommandError(
                f"{path} is a pipe that nobody reads, or a socket: write the export elsewhere"
            ) from None
        raise CommandError(f"cannot write to {path}: {error.strerror}") from None
    try:
        info = os.fstat(descriptor)
        if stat.S_ISREG(info.st_mode) or stat.S_ISDIR(info.st_mode):
            raise CommandError(f"{path} leads to a file through /proc: give the file's own path")
        if not stat.S_ISCHR(info.st_mode) and info.st_uid != os.geteuid():
            raise CommandError(f"{path} belongs to another user: write the export elsewhere")
        flags = fcntl.fcntl(descriptor, fcntl.F_GETFL)
        fcntl.fcntl(descriptor, fcntl.F_SETFL, flags & ~os.O_NONBLOCK)  # writes may wait
    except BaseException:
        os.close(descriptor)
        raise
    with os.fdopen(descriptor, "wb") as output:
        yield output


def _at_proc(directory: int) -> bool:
    """Whether the open ``directory`` is in /proc, whose links (/proc/self/fd/N) name open
    files, pipes and sockets rather than paths."""
    try:
        return os.fstat(directory).st_dev == os.stat("/proc").st_dev
    except OSError:
        return False


def _walk(path: str) -> tuple[int, str, bool]:
    """The directory that the last name of ``path`` is in (a descriptor), that name, and
    whether it is one of /proc's links to be opened as it is.

    One component at a time, each opened relative to the directory opened before it and
    without following a link; a link met on the way is followed only once checked (see
    _link). A directory on the way renamed or replaced meanwhile changes nothing: what is
    opened is what was checked.
    """
    pending = [part for part in path.split("/") if part not in ("", ".")][::-1]
    at = os.open("/" if path.startswith("/") else ".", _DIRECTORY)
    links = 0
    try:
        while pending:
            part = pending.pop()
            target = _link(at, part, path)
            if target is not None and _at_proc(at) and not pending:
                return at, part, True
            if target is not None:
                links += 1
                if links > _LINKS_AT_MOST:
                    raise CommandError(f"{path} goes through too many symbolic links")
                if target.startswith("/"):
                    os.close(at)
                    at = os.open("/", _DIRECTORY)
                if target.endswith("/") and not pending:
                    raise CommandError(f"{path} leads to a directory, not a file")
                pending.extend(p for p in reversed(target.split("/")) if p not in ("", "."))
                continue
            if not pending:
                return at, part, False
            inner = os.open(part, _DIRECTORY, dir_fd=at)
            os.close(at)
            at = inner
        raise CommandError(f"{path} leads to a directory, not a file")
    except BaseException:
        os.close(at)
        raise


def _link(at: int, name: str, path: str) -> str | None:
    """The target of ``name`` in the directory ``at`` if it is a symbolic link (None if it is
    not, or is not there); CommandError if it is another user's. With O_PATH, its owner and
    target are read from one descriptor of the link itself, so it cannot be swapped between."""
    try:
        if hasattr(os, "O_PATH"):
            link = os.open(name, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=at)
            try:
                info = os.fstat(link)
                target = os.readlink("", dir_fd=link) if stat.S_ISLNK(info.st_mode) else None
            finally:
                os.close(link)
        else:
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


def _files_of(store: str) -> set[tuple[int, int]]:
    """The device and inode of every file in the store's directory."""
    found = set()
    for directory, _, names in os.walk(store):
        for name in names:
            with suppress(OSError):
                info = os.stat(os.path.join(directory, name), follow_symlinks=False)
                found.add((info.st_dev, info.st_ino))
    return found
