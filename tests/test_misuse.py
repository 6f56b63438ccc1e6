"""Misuse fails loudly and at once: it never hangs, drops arguments or loses changes silently."""

from __future__ import annotations

import functools
import os
import subprocess
import sys
import threading
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest

from tgsession import (
    DiskStorage,
    MemoryStorage,
    SessionDecodeError,
    SessionError,
    SessionStorageError,
    by_user,
    with_session,
)

from conftest import Update, by_key, child_env, redis_storage


def counter(storage: Any = None, **options: Any) -> Any:
    return with_session(
        initial=lambda: {"count": 0},
        storage=storage or MemoryStorage(),
        get_session_key=by_key,
        **options,
    )


def test_a_foreign_decorator_between_two_sessions_still_runs() -> None:
    calls: list[str] = []

    def logged(function: Any) -> Any:
        @functools.wraps(function)
        def inner(*args: Any, **kwargs: Any) -> Any:
            calls.append("logged")
            return function(*args, **kwargs)

        return inner

    @counter(key="a")
    @logged
    @counter(key="b")
    def handler(update: Update, a: Any, b: Any) -> str:
        return "ok"

    assert handler(Update(1)) == "ok"
    assert calls == ["logged"]


def test_positional_arguments_reach_star_args_before_a_keyword_only_session() -> None:
    @counter()
    def handler(update: Update, *rest: Any, session: Any) -> Any:
        return rest

    assert handler(Update(1), "x", "y") == ("x", "y")


def test_surplus_positional_arguments_are_a_type_error_not_dropped() -> None:
    @counter()
    def handler(update: Update, session: Any, extra: Any = None) -> Any:
        return extra

    assert handler(Update(1), "e") == "e"
    with pytest.raises(TypeError, match="positional"):
        handler(Update(1), "e", "surplus")


def test_a_lazy_session_used_after_its_handler_returned_raises_and_holds_no_lock() -> None:
    manager = counter(lazy=True)
    kept: list[Any] = []

    @manager
    def handler(update: Update, session: Any) -> None:
        session["count"] += 1
        kept.append(session)

    handler(Update(1))
    with pytest.raises(SessionError, match="after its handler returned"):
        kept[0]["count"] += 1
    done = threading.Event()
    threading.Thread(target=lambda: (handler(Update(1)), done.set())).start()
    assert done.wait(5), "the session's lock was still held after its handler returned"
    with manager.open(1) as session:
        assert session == {"count": 2}


def test_a_lazy_session_whose_load_failed_can_be_tried_again_without_hanging() -> None:
    storage = MemoryStorage()
    storage.write("session:1", b"corrupt")
    errors: list[Exception] = []

    @counter(storage, lazy=True)
    def handler(update: Update, session: Any) -> None:
        for _ in range(2):
            try:
                session["count"]
            except SessionDecodeError as error:
                errors.append(error)

    thread = threading.Thread(target=handler, args=(Update(1),))
    thread.start()
    thread.join(5)
    assert not thread.is_alive()
    assert len(errors) == 2
    assert storage.read("session:1") == b"corrupt"


def test_stored_nan_is_refused_before_the_handler_runs() -> None:
    storage = MemoryStorage()
    storage.write("session:1", b'{"count": NaN}')
    ran: list[bool] = []

    @counter(storage)
    def handler(update: Update, session: Any) -> None:
        ran.append(True)

    with pytest.raises(SessionDecodeError, match="NaN"):
        handler(Update(1))
    assert ran == []


def test_bytes_in_another_json_layout_are_rewritten_canonically_once() -> None:
    storage = MemoryStorage()
    storage.write("session:1", b'{ "count": 1, "a": 2 }')
    writes: list[bytes] = []
    original_write = storage.write
    storage.write = lambda key, data: (writes.append(data), original_write(key, data))  # type: ignore[method-assign]

    @counter(storage)
    def read_only(update: Update, session: Any) -> int:
        return int(session["count"])

    assert [read_only(Update(1)) for _ in range(3)] == [1, 1, 1]
    assert writes == [b'{"a":2,"count":1}']


def test_get_session_key_none_means_by_user() -> None:
    assert with_session(get_session_key=None).get_session_key is by_user


def test_star_import_works_without_the_optional_redis() -> None:
    script = (
        "import sys; sys.modules['redis'] = None\n"
        "from tgsession import *\n"
        "assert 'RedisStorage' not in dir()\n"
        "try:\n"
        "    from tgsession import RedisStorage\n"
        "except ImportError as error:\n"
        "    print(error)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], env=child_env(), capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    assert "pip install 'tgsession[redis]'" in result.stdout


def test_a_lazy_session_first_used_by_a_thread_after_its_handler_returned_is_refused(
    storage: Any,
) -> None:
    manager = with_session(initial=lambda: {"count": 0}, storage=storage, lazy=True)
    errors: list[BaseException] = []
    started = threading.Event()

    @with_session(initial=lambda: {"count": 0}, storage=storage, lazy=True, get_session_key=by_key)
    def handler(update: Update, session: Any) -> None:
        def late() -> None:
            started.wait(5)
            try:
                session["count"] += 1
            except SessionError as error:
                errors.append(error)

        worker = threading.Thread(target=late)
        worker.start()
        late_threads.append(worker)

    late_threads: list[threading.Thread] = []
    with manager.open(5):  # the helper will wait for this lock, then find the call over
        handler(Update(5))
        started.set()
    late_threads[0].join(5)
    assert len(errors) == 1 and "after its handler returned" in str(errors[0])
    done = threading.Event()

    def reopen() -> None:
        with manager.open(5):
            done.set()

    reopener = threading.Thread(target=reopen)
    reopener.start()
    reopener.join(5)
    assert done.is_set(), "the late session's lock was never released"


def test_a_waiter_interrupted_by_a_signal_leaves_no_thread_lock_behind() -> None:
    import signal

    from tgsession.storage._locking import KeyedLocks

    locks = KeyedLocks()
    holding, release = threading.Event(), threading.Event()

    def holder() -> None:
        with locks.hold("k"):
            holding.set()
            release.wait(5)

    thread = threading.Thread(target=holder)
    thread.start()
    holding.wait(5)

    def interrupt(signum: int, frame: Any) -> None:
        raise TimeoutError("interrupted")

    previous = signal.signal(signal.SIGALRM, interrupt)
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.2)
        with pytest.raises(TimeoutError):
            locks.acquire("k")
    finally:
        signal.signal(signal.SIGALRM, previous)
    release.set()
    thread.join(5)
    assert len(locks) == 0


def test_the_storage_lock_hears_of_the_handlers_exception() -> None:
    exits: list[Any] = []
    inner = MemoryStorage()

    class Lock:
        def __init__(self, key: str) -> None:
            self.hold = inner.lock(key)

        def __enter__(self) -> None:
            self.hold.__enter__()

        def __exit__(self, *exc_info: Any) -> None:
            exits.append(exc_info[0])
            self.hold.__exit__(*exc_info)

    class Storage:
        read, write, delete = inner.read, inner.write, inner.delete

        def lock(self, key: str) -> Lock:
            return Lock(key)

    @counter(Storage())
    def handler(update: Update, session: Any, fail: bool = False) -> None:
        if fail:
            raise KeyError("boom")

    handler(Update(1))
    with pytest.raises(KeyError):
        handler(Update(1), fail=True)
    assert exits == [None, KeyError]


@pytest.mark.parametrize("kind", ["memory", "disk", "redis"])
def test_a_child_forked_inside_a_handler_can_open_the_session_once_the_parent_saved_it(
    kind: str, tmp_path: Path
) -> None:
    with ExitStack() as stack:
        if kind == "memory":
            storage: Any = MemoryStorage()
        elif kind == "disk":
            storage = DiskStorage(tmp_path)
        else:
            storage = stack.enter_context(redis_storage())
        manager = counter(storage)
        read, write = os.pipe()

        @manager
        def handler(update: Update, session: Any) -> int:
            session["count"] += 1
            pid = os.fork()
            if pid == 0:  # the child holds no lock of the parent's, whatever it inherited
                code = 1
                try:
                    with manager.open(1) as mine:  # waits for the parent's save
                        os.write(write, str(mine["count"]).encode())
                    code = 0
                finally:
                    os._exit(code)
            return pid

        pid = handler(Update(1))
        os.close(write)
        _, status = os.waitpid(pid, 0)
        seen = os.read(read, 100).decode()
        os.close(read)
        assert os.waitstatus_to_exitcode(status) == 0
        # A memory store is the process's own: the child sees its copy, saved in neither.
        assert seen == ("0" if kind == "memory" else "1")
        with manager.open(1) as session:
            assert session["count"] == 1


@pytest.mark.parametrize("kind", ["disk", "redis"])
def test_a_child_forked_inside_a_handler_that_returns_through_it_saves_nothing_of_the_parents(
    kind: str, tmp_path: Path
) -> None:
    # A forked child that leaves the handler normally (as a worker pool's child may) must not
    # save or release sessions that its parent holds: the parent's save would be refused.
    with ExitStack() as stack:
        storage = DiskStorage(tmp_path) if kind == "disk" else stack.enter_context(redis_storage())
        manager = counter(storage)
        stored_meanwhile = []

        @manager
        def handler(update: Update, session: Any) -> int:
            session["count"] += 1
            pid = os.fork()
            if pid == 0:
                session["count"] = 100  # the child's copy, which must not be saved
            else:
                os.waitpid(pid, 0)  # the child has left the handler by now
                stored_meanwhile.append(storage.read("session:1"))
            return pid

        parent = os.getpid()
        code = 1
        try:
            pid = handler(Update(1))
            code = 0
        finally:
            if os.getpid() != parent:  # the child, back from the handler: no pytest here
                os._exit(code)
        assert pid != 0
        assert stored_meanwhile == [None]  # the child wrote nothing
        with manager.open(1) as session:
            assert session["count"] == 1


@pytest.mark.parametrize("kind", ["disk", "redis"])
def test_a_forked_child_that_opened_a_lazy_session_saves_and_releases_it_on_return(
    kind: str, tmp_path: Path
) -> None:
    # The child's own session (its first use comes after the fork) is the child's to save
    # and release when it returns through the handler, even while the child lives on.
    with ExitStack() as stack:
        if kind == "disk":
            storage: Any = DiskStorage(tmp_path, lock_timeout=5)
        else:
            storage = stack.enter_context(redis_storage(lock_ttl=30, lock_timeout=5))
        manager = counter(storage, lazy=True)
        parent, (returned, child_returned), (done, parent_done) = os.getpid(), os.pipe(), os.pipe()

        @manager
        def handler(update: Update, session: Any) -> int:
            pid = os.fork()
            if pid == 0:
                session["count"] += 1  # the child's first use: it locks the session
            return pid

        try:
            pid = handler(Update(1))
        finally:
            if os.getpid() != parent:  # the child, back from the handler: it lives on
                os.write(child_returned, b"r")
                os.read(done, 1)  # until the parent is done
                os._exit(0)
        try:
            assert os.read(returned, 1) == b"r"
            with manager.open(1) as session:  # within lock_timeout, while the child lives
                assert session["count"] == 1
        finally:
            os.write(parent_done, b"d")
            os.waitpid(pid, 0)
            for fd in (returned, child_returned, done, parent_done):
                os.close(fd)


def test_a_handler_returns_while_its_helper_thread_still_waits_to_load_a_lazy_session() -> None:
    # The helper waits for the lazy session's lock, held by another handler that waits for
    # this handler's eager session: returning must not wait for the helper's load.
    storage = MemoryStorage()
    a = with_session(key="a", storage=storage, get_session_key=by_key)
    b = with_session(key="b", storage=storage, lazy=True, get_session_key=by_key)
    errors: list[BaseException] = []
    helper_waits = threading.Event()

    @a
    @b
    def first(update: Update, a: Any, b: Any) -> None:
        def helper() -> None:
            helper_waits.set()
            try:
                b["x"] = 1
            except SessionError as error:
                errors.append(error)

        threading.Thread(target=helper, daemon=True).start()
        helper_waits.wait(5)
        time.sleep(0.2)  # the helper now waits for b, which second holds

    def second() -> None:
        with b.open(1):
            time.sleep(0.5)
            with a.open(1):  # waits for first to release a
                pass

    threads = [threading.Thread(target=second, daemon=True)]
    threads[0].start()
    time.sleep(0.05)
    threads.append(threading.Thread(target=first, args=(Update(1),), daemon=True))
    threads[1].start()
    for thread in threads:
        thread.join(10)
    assert not any(thread.is_alive() for thread in threads), "deadlocked"
    time.sleep(0.2)
    assert len(errors) == 1 and "after its handler returned" in str(errors[0])


def test_a_closed_disk_storage_is_a_storage_error_naming_the_session(tmp_path: Path) -> None:
    storage = DiskStorage(tmp_path)
    storage.close()
    with pytest.raises(SessionStorageError, match=r"'session:1'.*closed"):
        counter(storage).open(1).__enter__()
