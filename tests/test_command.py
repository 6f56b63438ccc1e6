"""The tgsession command, run as a real process on real directories and the real Redis."""

from __future__ import annotations

import contextlib
import json
import os
import pickle
import pty
import re
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tgsession import DiskStorage, SessionLockTimeout, with_session
from tgsession.codec import JSONCodec

from conftest import child_env, redis_storage, redis_url

CODEC = JSONCodec()


def tgsession(
    *args: str, input: bytes | None = None, cwd: Path | None = None, **env: str
) -> subprocess.CompletedProcess[bytes]:
    """Run ``python -m tgsession ARGS`` and return what it did (any exit code)."""
    return subprocess.run(
        [sys.executable, "-m", "tgsession", *args],
        input=input,
        capture_output=True,
        cwd=cwd,
        env=child_env(**env),
        timeout=600,
    )


def out(result: subprocess.CompletedProcess[bytes]) -> str:
    assert result.returncode == 0, result.stderr.decode()
    return result.stdout.decode()


@pytest.fixture
def store(tmp_path: Path) -> Iterator[DiskStorage]:
    """A DiskStorage with three user sessions and one chat session."""
    storage = DiskStorage(tmp_path / "sessions")
    for user in (1, 2, 3):
        storage.write(f"session:{user}", CODEC.encode({"count": user, "name": "Ann"}))
    storage.write("chat:-100", CODEC.encode({"members": [1, 2]}))
    yield storage
    storage.close()


def at(storage: DiskStorage) -> list[str]:
    return ["--store", storage.directory]


# -- looking -----------------------------------------------------------------------------------


def test_ls_lists_the_stored_sessions_one_key_per_line(store: DiskStorage) -> None:
    assert out(tgsession(*at(store), "ls")).split() == [
        "chat:-100",
        "session:1",
        "session:2",
        "session:3",
    ]


def test_ls_takes_kinds_and_a_limit(store: DiskStorage) -> None:
    assert out(tgsession(*at(store), "ls", "session", "--limit", "2")).split() == [
        "session:1",
        "session:2",
    ]
    assert out(tgsession("ls", "chat", *at(store))).split() == ["chat:-100"]  # store after


def test_ls_long_shows_bytes_and_expiry(store: DiskStorage) -> None:
    store.write("session:9", b'{"a":1}', ttl=3600)
    lines = dict(
        line.split("\t", 1) for line in out(tgsession(*at(store), "ls", "-l")).splitlines()
    )
    assert lines["session:1"] == f"{len(store.read('session:1') or b'')}\t-"
    size, expires = lines["session:9"].split("\t")
    when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(store.expiry("session:9")))
    assert size == "7" and expires == when


def test_keys_a_terminal_would_act_on_are_printed_escaped_on_one_line(
    store: DiskStorage,
) -> None:
    hostile = [
        "session:\x1b]0;pwned\x07",
        "session:a\nb",
        "session:\u202eevil",
        "'session:q",
        "session:1 ",  # reads as session:1
    ]
    for key in hostile:
        store.write(key, b'{"a":1}')
    store.write("session:Zoë d", b'{"a":1}')
    listing = out(tgsession(*at(store), "ls", "session"))
    assert "\x1b" not in listing and "\u202e" not in listing
    listed = {repr(key) for key in hostile if key.startswith("session:")} | {"session:Zoë d"}
    assert set(listing.splitlines()) >= listed
    long = out(tgsession(*at(store), "ls", "-l", "session")).splitlines()
    assert all(line.count("\t") == 2 for line in long)
    assert repr("session:a\nb") + "\t7\t-" in long
    stats = out(tgsession(*at(store), "stats", "--top", "20"))
    assert "\x1b" not in stats and repr("'session") in stats  # the kind of the quoted key
    assert f"  {7:>12,}  {hostile[0]!r}" in stats.splitlines()


def test_export_and_show_escape_what_a_terminal_acts_on_and_keep_the_bytes(
    store: DiskStorage, tmp_path: Path
) -> None:
    key, data = "session:\u009b31m", '{"name":"\u202eevil\u2028"}'.encode()
    store.write(key, data)
    exported = tgsession(*at(store), "export", "session").stdout
    for raw in ("\u009b", "\u202e", "\u2028"):
        assert raw.encode() not in exported
    (line,) = [json.loads(line) for line in exported.splitlines() if b"\\u009b" in line]
    assert line["key"] == key and "base64" in line  # the value's bytes, kept exactly
    copy = DiskStorage(tmp_path / "copy")
    out(tgsession("--store", copy.directory, "import", input=exported))
    assert copy.read(key) == data
    shown = out(tgsession(*at(store), "show", key))
    assert "\\u202e" in shown and "\u202e" not in shown
    assert json.loads(shown) == {"name": "\u202eevil\u2028"}


def test_the_store_comes_from_the_environment_when_not_given(store: DiskStorage) -> None:
    listing = tgsession("ls", "chat", TGSESSION_STORE=store.directory)
    assert out(listing).split() == ["chat:-100"]
    listing = tgsession("ls", "chat", TGSESSION_DIR=store.directory)
    assert out(listing).split() == ["chat:-100"]


def test_show_prints_a_session_as_indented_json(store: DiskStorage) -> None:
    shown = out(tgsession(*at(store), "show", "session:2"))
    assert json.loads(shown) == {"count": 2, "name": "Ann"}
    assert '\n  "count": 2' in shown
    raw = tgsession(*at(store), "show", "--raw", "session:2")
    assert raw.stdout == store.read("session:2")


def test_show_of_a_missing_session_names_it_and_exits_1(store: DiskStorage) -> None:
    result = tgsession(*at(store), "show", "session:404")
    assert result.returncode == 1
    assert result.stderr.decode() == (
        "tgsession: no session 'session:404' in this store (see: tgsession ls)\n"
    )


def test_a_missing_store_directory_is_an_error_and_is_not_created(tmp_path: Path) -> None:
    missing = tmp_path / "typo"
    result = tgsession("--store", str(missing), "ls")
    assert result.returncode == 1
    assert f"no session store at {missing}" in result.stderr.decode()
    assert not missing.exists()


def test_wrong_usage_exits_2_with_a_usage_line(store: DiskStorage) -> None:
    for args in (["frobnicate"], ["show"], ["ls", "--limit", "many"], []):
        result = tgsession(*at(store), *args)
        assert result.returncode == 2, args
        assert b"usage: tgsession" in result.stderr


def test_the_console_script_and_python_m_are_the_same_command(store: DiskStorage) -> None:
    script = Path(sys.executable).with_name("tgsession")
    assert script.exists(), "pip install -e . installs the console script"
    result = subprocess.run(
        [str(script), *at(store), "ls", "chat"], capture_output=True, env=child_env()
    )
    assert result.stdout.decode().split() == ["chat:-100"]


def test_importing_tgsession_loads_nothing_of_the_command() -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys, tgsession; print(sorted(m for m in sys.modules "
            "if m.startswith('tgsession.cli') or m == 'argparse'))",
        ],
        capture_output=True,
        env=child_env(),
        check=True,
    )
    assert result.stdout.decode().strip() == "[]"


# -- changing ----------------------------------------------------------------------------------


def test_rm_deletes_sessions_and_reports_a_missing_one_unless_forced(store: DiskStorage) -> None:
    result = tgsession(*at(store), "rm", "session:1", "session:404", "session:2")
    assert result.returncode == 1
    assert result.stderr.decode() == "tgsession: cannot remove 'session:404': no such session\n"
    assert store.read("session:1") is None and store.read("session:2") is None
    assert out(tgsession(*at(store), "rm", "-f", "session:404", "session:3")) == ""
    assert store.read("session:3") is None


def test_purge_removes_expired_sessions_still_on_disk(store: DiskStorage) -> None:
    store.write("session:8", b"{}", ttl=0.05)
    store.write("session:9", b"{}", ttl=3600)
    time.sleep(0.2)
    assert out(tgsession(*at(store), "purge")) == "purged 1 expired session\n"
    assert out(tgsession(*at(store), "purge")) == "purged 0 expired sessions\n"
    assert store.read("session:9") == b"{}"


# -- edit --------------------------------------------------------------------------------------

# An $EDITOR for tests: a Python script that runs the steps given in its environment, one per
# opening of the editor: "count+5" adds 5 to the session's count, "text:..." replaces the
# whole file, "wait:PATH" says it is open (PATH.open) and waits for PATH.go first.
EDITOR = textwrap.dedent(
    """
    import json, os, sys, time
    path = sys.argv[1]
    state = os.environ["EDIT_STATE"]
    done = int(open(state).read()) if os.path.exists(state) else 0
    step = os.environ["EDIT_STEPS"].split("|")[done]
    open(state, "w").write(str(done + 1))
    text = open(path).read()
    with open(state + ".seen", "a") as seen:
        seen.write(text + "\\n=====\\n")
    if step.startswith("stubborn:"):  # ignores SIGTERM, and says so
        import signal
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        step = "wait:" + step[9:]
    if step.startswith("wait:"):
        marker = step[5:]
        open(marker + ".open", "w").write(str(os.getpid()))
        while not os.path.exists(marker + ".go"):
            time.sleep(0.02)
        step = "count+5"
    if step.startswith("count+"):
        body = "".join(l for l in text.splitlines(True) if not l.startswith("//"))
        session = json.loads(body)
        session["count"] += int(step[6:])
        text = json.dumps(session, indent=2)
    elif step.startswith("text:"):
        text = step[5:]
    elif step == "fail":
        sys.exit(3)
    open(path, "w").write(text)
    """
)


def editing(tmp_path: Path, *steps: str) -> dict[str, str]:
    script = tmp_path / "editor.py"
    script.write_text(EDITOR)
    return {
        "EDITOR": f"{sys.executable} {script}",
        "VISUAL": "",
        "EDIT_STATE": str(tmp_path / "edits"),
        "EDIT_STEPS": "|".join(steps),
    }


def test_edit_saves_the_session_as_edited(store: DiskStorage, tmp_path: Path) -> None:
    result = tgsession(*at(store), "edit", "session:2", **editing(tmp_path, "count+5"))
    assert out(result) == "saved session 'session:2'\n"
    assert store.read("session:2") == b'{"count":7,"name":"Ann"}'


def test_edit_holds_the_session_locked_so_the_bot_waits(store: DiskStorage, tmp_path: Path) -> None:
    marker = tmp_path / "editor"
    editor = subprocess.Popen(
        [sys.executable, "-m", "tgsession", *at(store), "edit", "session:2"],
        env=child_env(**editing(tmp_path, f"wait:{marker}")),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 60
        while not Path(f"{marker}.open").exists():
            assert editor.poll() is None, editor.communicate()
            assert time.monotonic() < deadline, "the editor never opened"
            time.sleep(0.02)
        bot = with_session(
            initial=lambda: {"count": 0},
            storage=DiskStorage(store.directory, lock_timeout=0.3),
            get_session_key=lambda user: user,
        )
        with pytest.raises(SessionLockTimeout), bot.open(2):
            pass
        with bot.open(3) as other:  # other users are not held up
            assert other["count"] == 3
        Path(f"{marker}.go").touch()
        assert editor.wait(60) == 0
        with bot.open(2) as session:
            assert session["count"] == 7
    finally:
        editor.kill()
        editor.communicate()


def editing_in_a_process(
    store: DiskStorage, tmp_path: Path, step: str
) -> tuple[subprocess.Popen[bytes], int]:
    """``tgsession edit session:2`` running, with its editor open and waiting (``step`` is
    ``wait`` or ``stubborn``, which ignores SIGTERM); the command and the editor's pid."""
    marker = tmp_path / "editor"
    edit = subprocess.Popen(
        [sys.executable, "-m", "tgsession", *at(store), "edit", "session:2"],
        env=child_env(**editing(tmp_path, f"{step}:{marker}")),
        stderr=subprocess.PIPE,
    )
    opened = Path(f"{marker}.open")
    deadline = time.monotonic() + 60
    while not opened.exists() or not opened.read_text():
        assert edit.poll() is None and time.monotonic() < deadline
        time.sleep(0.02)
    return edit, int(opened.read_text())


def test_edit_told_to_stop_stops_its_editor_and_releases_the_session(
    store: DiskStorage, tmp_path: Path
) -> None:
    import signal

    edit, editor_pid = editing_in_a_process(store, tmp_path, "wait")
    edit.send_signal(signal.SIGTERM)
    _, said = edit.communicate(timeout=60)
    assert edit.returncode == 128 + signal.SIGTERM, said
    with pytest.raises(ProcessLookupError):  # the editor was stopped, not left running
        os.kill(editor_pid, 0)
    with DiskStorage(store.directory, lock_timeout=0.3).lock("session:2"):
        pass  # released
    assert store.read("session:2") == CODEC.encode({"count": 2, "name": "Ann"})


def test_edit_stops_an_editor_that_ignores_sigterm_even_if_told_twice(
    store: DiskStorage, tmp_path: Path
) -> None:
    import signal

    edit, editor_pid = editing_in_a_process(store, tmp_path, "stubborn")
    edit.send_signal(signal.SIGTERM)
    time.sleep(0.5)
    edit.send_signal(signal.SIGTERM)  # impatient
    edit.communicate(timeout=60)
    assert edit.returncode == 128 + signal.SIGTERM
    with pytest.raises(ProcessLookupError):
        os.kill(editor_pid, 0)


def test_edit_reopens_the_editor_with_the_error_then_saves_the_fix(
    store: DiskStorage, tmp_path: Path
) -> None:
    env = editing(tmp_path, 'text:{"count": 5,', 'text:["a list"]', 'text:{"count": 6}')
    result = tgsession(*at(store), "edit", "session:1", **env)
    assert out(result) == "saved session 'session:1'\n"
    assert store.read("session:1") == b'{"count":6}'
    seen = (tmp_path / "edits.seen").read_text().split("=====\n")
    assert "// ERROR: not JSON" in seen[1] and '{"count": 5,' in seen[1]
    assert "// ERROR: a session is a JSON object ({...}), not a list" in seen[2]


@pytest.mark.parametrize(
    ("steps", "said"),
    [
        (["text:"], "aborted: the text was emptied; session 'session:1' is unchanged"),
        (["fail"], "the editor exited with status 3; session 'session:1' is unchanged"),
        (["text:{", "text:{"], "aborted: the same error again; session 'session:1' is unchanged"),
    ],
    ids=["emptied", "editor failed", "same error twice"],
)
def test_edit_aborts_leaving_the_session_untouched(
    store: DiskStorage, tmp_path: Path, steps: list[str], said: str
) -> None:
    before = store.read("session:1")
    result = tgsession(*at(store), "edit", "session:1", **editing(tmp_path, *steps))
    assert result.returncode == 1
    assert said in (result.stdout + result.stderr).decode()
    assert store.read("session:1") == before


def test_edit_without_a_change_saves_nothing(store: DiskStorage, tmp_path: Path) -> None:
    result = tgsession(*at(store), "edit", "session:1", **editing(tmp_path, "count+0"))
    assert out(result) == "session 'session:1' is unchanged\n"


def test_edit_keeps_the_expiry_the_session_had(store: DiskStorage, tmp_path: Path) -> None:
    store.write("session:5", b'{"count":1}', ttl=3600)
    before = store.expiry("session:5")
    out(tgsession(*at(store), "edit", "session:5", **editing(tmp_path, "count+1")))
    assert store.read("session:5") == b'{"count":2}'
    assert before is not None and abs((store.expiry("session:5") or 0) - before) < 1


BOT_MODULE = """
from dataclasses import dataclass, field
from datetime import date
from tgsession import DiskStorage, with_session

@dataclass
class Profile:
    count: int = 0
    name: str = ""
    born: date = field(default_factory=lambda: date(2000, 1, 1))

profiles = with_session(initial=Profile, key="session", storage=DiskStorage({directory!r}))
"""


def test_edit_with_a_manager_checks_the_session_loads_as_its_type(
    store: DiskStorage, tmp_path: Path
) -> None:
    (tmp_path / "mybot.py").write_text(BOT_MODULE.format(directory=store.directory))
    env = editing(
        tmp_path,
        'text:{"count": "seven", "name": "Ann", "born": "2000-01-01"}',
        'text:{"count": 7, "name": "Ann", "born": "2001-02-03"}',
    )
    result = tgsession(
        *at(store), "edit", "session:1", "--manager", "mybot:profiles", cwd=tmp_path, **env
    )
    assert out(result) == "saved session 'session:1'\n"
    assert store.read("session:1") == b'{"born":"2001-02-03","count":7,"name":"Ann"}'
    seen = (tmp_path / "edits.seen").read_text().split("=====\n")
    assert (
        "// ERROR:" in seen[1]
        and "count" in seen[1]
        and "seven" not in seen[1].split("ERROR")[1].split("\n")[0]
    )


# -- export and import -------------------------------------------------------------------------

CORPUS: dict[str, bytes] = {
    "session:1": CODEC.encode({"count": 1, "text": "héllo \u2028 \x00 \U0001f600"}),
    "session:2": CODEC.encode({"big": 2**80, "float": 1e20, "tiny": 5e-324, "deep": [[[[{}]]]]}),
    "session:3": b'{"count":3}',
    "chat:-100": b'{\n  "pretty": true\n}',  # JSON, but over several lines
    "chat:-200": b' {"padded": true}\t',  # JSON with whitespace around it
    "custom:1": b"\x82\xa5count\x03\xff",  # another codec's bytes (msgpack, say)
    "state:1:1": CODEC.encode({"state": "Survey:age", "data": {}}),
}


def fill(storage: Any) -> None:
    for key, data in CORPUS.items():
        storage.write(key, data)
    storage.write("session:ttl", b'{"count":9}', ttl=3600)


def without_expiry(export: bytes) -> list[bytes]:
    """The lines of an export, their expiry left out (Redis keeps it to the millisecond)."""
    return [re.sub(rb'"expires":"[^"]*",', b"", line) for line in export.splitlines()]


def test_export_then_import_gives_the_same_bytes_between_disk_and_redis(tmp_path: Path) -> None:
    source = DiskStorage(tmp_path / "source")
    fill(source)
    exported = out(tgsession("--store", source.directory, "export")).encode()
    assert exported.count(b"\n") == len(CORPUS) + 1
    with redis_storage() as redis:
        imported = tgsession(
            "--store", redis_url(), "--prefix", redis.prefix, "import", input=exported
        )
        assert out(imported) == f"imported {len(CORPUS) + 1} sessions\n"
        for key, data in CORPUS.items():
            assert redis.read(key) == data, key
        assert 3500 < (redis.expiry("session:ttl") or 0) - time.time() <= 3600
        back = out(tgsession("--store", redis_url(), "--prefix", redis.prefix, "export")).encode()
    target = tmp_path / "target"
    target.mkdir()
    out(tgsession("--store", str(target), "import", "-", input=back))
    copy = DiskStorage(target)
    for key, data in CORPUS.items():
        assert copy.read(key) == data, key
    again = out(tgsession("--store", str(target), "export")).encode()
    assert without_expiry(again) == without_expiry(exported)  # the same lines, in order
    assert abs((copy.expiry("session:ttl") or 0) - (source.expiry("session:ttl") or 0)) < 0.1
    line = next(json.loads(x) for x in exported.splitlines() if b'"session:3"' in x)
    assert line == {"key": "session:3", "value": {"count": 3}}


def test_export_of_kinds_to_a_file(store: DiskStorage, tmp_path: Path) -> None:
    target = tmp_path / "chat.jsonl"
    assert out(tgsession(*at(store), "export", "chat", "-o", str(target))) == ""
    assert target.read_bytes() == b'{"key":"chat:-100","value":{"members":[1,2]}}\n'


def test_import_keeps_stored_sessions_unless_told_to_overwrite(
    store: DiskStorage, tmp_path: Path
) -> None:
    lines = b'{"key":"session:1","value":{"count":100}}\n{"key":"session:7","value":{}}\n'
    dry = tgsession(*at(store), "import", "--dry-run", input=lines)
    assert out(dry) == "would import 1 session; kept 1 already stored (--overwrite replaces them)\n"
    assert store.read("session:7") is None
    assert out(tgsession(*at(store), "import", input=lines)).startswith("imported 1 session;")
    assert store.read("session:1") == b'{"count":1,"name":"Ann"}'
    assert out(tgsession(*at(store), "import", "--overwrite", input=lines)) == (
        "imported 2 sessions\n"
    )
    assert store.read("session:1") == b'{"count":100}'


def test_import_names_each_bad_line_goes_on_and_exits_1(store: DiskStorage) -> None:
    lines = (
        b'{"key":"session:5","value":{"a":1}}\n'
        b"not json\n"
        b'{"key":"session:6"}\n'
        b'{"key":"session:7","value":{},"colour":"red"}\n'
        b'{"key":"session:8","expires":"2020-01-01T00:00:00Z","value":{}}\n'
        b'{"key":"session:9","value":{"b":2}}\n'
    )
    result = tgsession(*at(store), "import", input=lines)
    assert result.returncode == 1
    errors = result.stderr.decode().splitlines()
    assert [e.split(":")[1] for e in errors] == [" line 2", " line 3", " line 4"]
    assert "'session:6' needs exactly one of 'value' and 'base64'" in errors[1]
    assert result.stdout.decode() == "imported 2 sessions; skipped 1 expired\n"
    assert store.read("session:9") == b'{"b":2}' and store.read("session:8") is None


def test_export_reports_a_foreign_row_by_key_and_goes_on(store: DiskStorage) -> None:
    import diskcache

    with diskcache.Cache(store.directory) as cache:
        cache.set("session:pickled", {"a": 1})  # pickled by diskcache: never loaded
    result = tgsession(*at(store), "export", "session")
    assert result.returncode == 1
    assert "skipped 'session:pickled'" in result.stderr.decode()
    assert result.stdout.count(b"\n") == 3


@pytest.mark.parametrize("command", ["ls", "export", "stats", "show session:1"])
def test_output_into_a_closed_pipe_stops_quietly(store: DiskStorage, command: str) -> None:
    # The reader closes its end at once, before the command writes: a write, or the flush of
    # what is buffered when the command ends, meets a closed pipe.
    pipeline = (
        f"{sys.executable} -m tgsession --store {store.directory} {command} | "
        "(exec 0<&-; sleep 2); echo ${PIPESTATUS[0]}"
    )
    env = {k: v for k, v in child_env().items() if k != "PYTHONUNBUFFERED"}
    result = subprocess.run(
        pipeline, shell=True, capture_output=True, env=env, executable="/bin/bash"
    )
    assert result.stderr == b""
    assert result.stdout.strip() == b"0"


def test_an_export_file_is_owner_only(store: DiskStorage, tmp_path: Path) -> None:
    target = tmp_path / "sessions.jsonl"
    target.write_bytes(b"old")
    target.chmod(0o644)
    out(tgsession(*at(store), "export", "-o", str(target)))
    assert target.stat().st_mode & 0o777 == 0o600
    assert target.read_bytes().count(b"\n") == 4


# -- stats, migrate, states --------------------------------------------------------------------


def test_stats_counts_sessions_bytes_and_expiring_ones_per_kind(store: DiskStorage) -> None:
    store.write("session:9", b'{"big":"' + b"x" * 100 + b'"}', ttl=3600)
    report = json.loads(out(tgsession(*at(store), "stats", "--json", "--top", "2")))
    sizes = {f"session:{n}": len(store.read(f"session:{n}") or b"") for n in (1, 2, 3, 9)}
    assert report["kinds"] == {
        "chat": {"sessions": 1, "bytes": len(b'{"members":[1,2]}'), "expiring": 0},
        "session": {"sessions": 4, "bytes": sum(sizes.values()), "expiring": 1},
    }
    assert report["largest"][0] == {"key": "session:9", "bytes": 110}
    table = out(tgsession(*at(store), "stats"))
    assert table.splitlines()[0].split() == ["kind", "sessions", "bytes", "expiring"]
    assert table.splitlines()[3].split()[:2] == ["total", "5"]


MIGRATING_BOT = """
from tgsession import DiskStorage, with_session

def split_name(session):
    first, _, last = session.pop("name").partition(" ")
    session.update(first=first, last=last)

def count_to_visits(session):
    session["visits"] = session.pop("count")

sessions = with_session(
    initial=lambda: {{"visits": 0, "first": "", "last": ""}},
    storage=DiskStorage({directory!r}),
    version=3,
    migrations={{2: split_name, 3: count_to_visits}},
)
"""


def test_migrate_brings_every_session_to_the_current_version(tmp_path: Path) -> None:
    storage = DiskStorage(tmp_path / "sessions")
    storage.write("session:1", b'{"count":1,"name":"Ann Lee"}')
    storage.write("session:2", b'{"$v":2,"count":2,"first":"Bo","last":""}')
    storage.write("session:3", b'{"$v":3,"first":"Cy","last":"","visits":3}')
    storage.write("session:4", b'{"count":4}')  # no name: its migration raises
    storage.write("chat:1", b'{"count":1}')  # another kind: left alone
    (tmp_path / "mybot.py").write_text(MIGRATING_BOT.format(directory=storage.directory))
    dry = tgsession("migrate", "--manager", "mybot:sessions", "--dry-run", cwd=tmp_path)
    assert dry.returncode == 1
    assert dry.stdout.decode() == (
        "would migrate 2 sessions to version 3 (1 from version 1, 1 from version 2); "
        "1 already at version 3\n"
    )
    assert "session 'session:4' was not migrated" in dry.stderr.decode()
    assert storage.read("session:1") == b'{"count":1,"name":"Ann Lee"}'
    done = tgsession("migrate", "--manager", "mybot:sessions", cwd=tmp_path)
    assert done.stdout.decode().startswith("migrated 2 sessions to version 3")
    assert storage.read("session:1") == b'{"$v":3,"first":"Ann","last":"Lee","visits":1}'
    assert storage.read("session:2") == b'{"$v":3,"first":"Bo","last":"","visits":2}'
    assert storage.read("session:4") == b'{"count":4}'
    assert storage.read("chat:1") == b'{"count":1}'
    again = tgsession("migrate", "--manager", "mybot:sessions", cwd=tmp_path)
    assert again.stdout.decode() == "migrated 0 sessions to version 3; 3 already at version 3\n"


def test_migrate_says_where_a_failing_migration_raised_but_not_its_message(
    tmp_path: Path,
) -> None:
    storage = DiskStorage(tmp_path / "sessions")
    storage.write("session:1", b'{"count":1,"name":"s3cret"}')
    bot = MIGRATING_BOT.replace(
        "first, _, last", 'raise ValueError("no space in " + session["name"])\n    first, _, last'
    )
    (tmp_path / "mybot.py").write_text(bot.format(directory=storage.directory))
    result = tgsession("migrate", "--manager", "mybot:sessions", cwd=tmp_path)
    assert result.returncode == 1
    said = result.stderr.decode()
    assert "the migration of session 'session:1' to version 2 raised ValueError" in said
    assert f"the ValueError was raised in split_name(), {tmp_path / 'mybot.py'}:5" in said
    assert "s3cret" not in said
    assert storage.read("session:1") == b'{"count":1,"name":"s3cret"}'


HELPED_MIGRATIONS = """
import operator
from tgsession import DiskStorage, with_session

def check(value):
    raise ValueError("bad " + value)

def through_a_helper(session):
    check(session["name"])

sessions = with_session(
    initial=dict,
    storage=DiskStorage({directory!r}),
    version=3,
    migrations={{2: operator.itemgetter("missing"), 3: through_a_helper}},
)
"""


def test_migrate_names_the_helper_that_raised_and_the_migration_that_called_it(
    tmp_path: Path,
) -> None:
    storage = DiskStorage(tmp_path / "sessions")
    storage.write("session:1", b'{"name":"s3cret"}')
    storage.write("session:2", b'{"$v":2,"name":"s3cret"}')
    bot = tmp_path / "mybot.py"
    bot.write_text(HELPED_MIGRATIONS.format(directory=storage.directory))
    said = tgsession("migrate", "--manager", "mybot:sessions", cwd=tmp_path).stderr.decode()
    assert (
        f"the ValueError was raised in check(), {bot}:6, called from the migration "
        f"through_a_helper(), {bot}:9"
    ) in said
    assert "the KeyError came from the migration itself, which is not Python code" in said
    assert "s3cret" not in said


def test_import_states_copies_telebot_states_from_a_pickle_file(
    store: DiskStorage, tmp_path: Path
) -> None:
    states = {"telebot:5:7": {"state": "Survey:age", "data": {"name": "Ann"}}}
    path = tmp_path / "states.pkl"
    path.write_bytes(pickle.dumps(states))
    result = tgsession(*at(store), "import-states", "--from-pickle", str(path))
    assert out(result) == "imported 1 telebot state\n"
    assert json.loads(store.read("state:5:7") or b"") == {
        "state": "Survey:age",
        "data": {"name": "Ann"},
    }


# -- long work ---------------------------------------------------------------------------------


def test_progress_is_drawn_on_a_terminal_and_never_in_a_pipe(store: DiskStorage) -> None:
    piped = tgsession(*at(store), "export")
    assert piped.stderr == b""
    controller, terminal = pty.openpty()
    try:
        result = subprocess.run(
            [sys.executable, "-m", "tgsession", *at(store), "export"],
            stdout=subprocess.PIPE,
            stderr=terminal,
            env=child_env(),
        )
        os.close(terminal)
        terminal = -1
        shown = os.read(controller, 4096).decode()
    finally:
        if terminal != -1:
            os.close(terminal)
        os.close(controller)
    assert result.returncode == 0
    assert "exported 4 sessions" in shown


# The command as its console script runs it, reporting at exit the peak memory of its own
# process image (a child's ru_maxrss would count the pages it shared with pytest before exec).
RUN_AND_REPORT = """
import atexit, runpy, sys
def report():
    peak = next(line for line in open("/proc/self/status") if line.startswith("VmHWM:"))
    sys.stderr.write("\\n" + peak)
atexit.register(report)
sys.argv[0] = "tgsession"
runpy.run_module("tgsession", run_name="__main__")
"""


def peak_rss_kib(*args: str, input_path: Path | None = None) -> int:
    """Run the command with ``args`` (stdin from ``input_path``); return its peak resident
    memory in KiB."""
    with open(input_path or os.devnull, "rb") as stdin:
        result = subprocess.run(
            [sys.executable, "-c", RUN_AND_REPORT, *args],
            stdin=stdin,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env=child_env(),
        )
    errors, _, peak = result.stderr.decode().rpartition("\nVmHWM:")
    assert result.returncode == 0, errors
    return int(peak.split()[0])


def _fill_disk(directory: Path, count: int) -> None:
    import diskcache

    from tgsession.storage.disk import CACHE_SETTINGS

    with diskcache.Cache(directory, **CACHE_SETTINGS) as cache, cache.transact():
        for user in range(count):
            cache.set(f"session:{user}", CODEC.encode({"count": user, "name": "Ann"}))


@pytest.mark.parametrize("kind", ["disk", "redis"])
def test_the_streaming_commands_run_in_constant_memory_over_100000_sessions(
    tmp_path: Path, kind: str
) -> None:
    """Peak memory of ls, stats, export and import at 100,000 sessions against 1,000: no
    more than a few MiB apart, where holding every session would take tens of MiB."""
    peaks: dict[int, dict[str, int]] = {}
    for count in (1_000, 100_000):
        export = tmp_path / f"{count}.jsonl"
        source = tmp_path / f"source-{count}"
        _fill_disk(source, count)
        if kind == "disk":
            target = tmp_path / f"target-{count}"
            store_args, target_args = ["--store", str(source)], ["--store", str(target)]
            peaks[count] = {"export": peak_rss_kib(*store_args, "export", "-o", str(export))}
            peaks[count]["import"] = peak_rss_kib(*target_args, "import", input_path=export)
            assert export.read_bytes().count(b"\n") == count
            copy = DiskStorage(target)
            assert copy.read(f"session:{count - 1}") == CODEC.encode(
                {"count": count - 1, "name": "Ann"}
            )
            copy.close()
        else:
            out(tgsession("--store", str(source), "export", "-o", str(export)))
            with redis_storage() as redis:
                store_args = ["--store", redis_url(), "--prefix", redis.prefix]
                peaks[count] = {"import": peak_rss_kib(*store_args, "import", input_path=export)}
                back = tmp_path / f"back-{count}.jsonl"
                peaks[count]["export"] = peak_rss_kib(*store_args, "export", "-o", str(back))
                assert sorted(back.read_bytes().splitlines()) == sorted(
                    export.read_bytes().splitlines()
                )
                peaks[count]["ls"] = peak_rss_kib(*store_args, "ls", "-l")
                peaks[count]["stats"] = peak_rss_kib(*store_args, "stats")
        if kind == "disk":
            peaks[count]["ls"] = peak_rss_kib(*store_args, "ls", "-l")
            peaks[count]["stats"] = peak_rss_kib(*store_args, "stats")
    for command, small in peaks[1_000].items():
        assert peaks[100_000][command] - small < 8 * 1024, (command, peaks)


# -- failures: each named, the others done -----------------------------------------------------


def _foreign_row(store: DiskStorage, key: str) -> None:
    import diskcache

    with diskcache.Cache(store.directory) as cache:
        cache.set(key, {"pickled": True})  # what another program might leave


def test_a_row_whose_key_is_not_utf8_is_skipped_by_every_listing(store: DiskStorage) -> None:
    import sqlite3

    with sqlite3.connect(Path(store.directory) / "cache.db") as database:  # another program's
        database.execute(
            "INSERT INTO Cache (key, raw, store_time, expire_time, access_time, access_count,"
            " tag, size, mode, filename, value) VALUES (CAST(X'73657373696f6e3a32ff1b5d30'"
            " AS TEXT), 1, 0, NULL, 0, 0, NULL, 0, 1, NULL, X'7b7d')"
        )
    for command in (["ls"], ["ls", "-l"], ["stats"], ["export"]):
        result = tgsession(*at(store), *command)
        assert result.returncode == 0, result.stderr
        assert b"session:3" in result.stdout and b"\x1b" not in result.stdout + result.stderr
        assert b"its key is not UTF-8" in result.stderr


def test_a_session_nested_too_deeply_for_json_parsers_is_exported_exactly(
    store: DiskStorage, tmp_path: Path
) -> None:
    deep = b"[" * 2000 + b"]" * 2000
    store.write("session:deep", deep)
    exported = out(tgsession(*at(store), "export")).encode()
    copy = DiskStorage(tmp_path / "copy")
    out(tgsession("--store", copy.directory, "import", input=exported))
    assert copy.read("session:deep") == deep
    shown = tgsession(*at(store), "show", "session:deep")
    assert shown.returncode == 1 and b"or it is nested too deeply): use show --raw" in shown.stderr
    edited = tgsession(*at(store), "edit", "session:deep", EDITOR="true")
    assert edited.returncode == 1 and b"or it is nested too deeply)" in edited.stderr
    line = b'{"key":"session:x","value":' + b"[" * 200_000 + b"]" * 200_000 + b"}\n"
    imported = tgsession("--store", copy.directory, "import", input=line + exported)
    assert imported.returncode == 1 and b"line 1: its value is nested too deeply" in imported.stderr


def test_what_the_command_says_on_stderr_carries_no_control_characters(
    store: DiskStorage,
) -> None:
    line = b'{"key":"session:1","\\u001b]0;PWNED\\u0007":1}\n'
    result = tgsession(*at(store), "import", input=line)
    assert result.returncode == 1 and b"line 1" in result.stderr
    assert b"\x1b" not in result.stderr and b"\x07" not in result.stderr
    assert b"\\x1b]0;PWNED\\x07" in result.stderr


def test_rm_removes_a_foreign_entry_and_goes_on_past_a_busy_one(store: DiskStorage) -> None:
    _foreign_row(store, "session:9")
    with store.lock("session:2"):  # a handler holds it
        result = tgsession(
            *at(store), "--lock-timeout", "0.2", "rm", "session:9", "session:2", "session:3"
        )
    assert result.returncode == 1
    error = result.stderr.decode()
    assert "'session:2' was not removed" in error and "--lock-timeout" in error
    assert store.read("session:2") is not None
    assert "session:9" not in out(tgsession(*at(store), "ls")) and store.read("session:3") is None


def test_import_goes_on_past_a_busy_session_and_keeps_a_foreign_one(store: DiskStorage) -> None:
    _foreign_row(store, "session:7")
    lines = b"".join(b'{"key":"session:%d","value":{"n":%d}}\n' % (n, n) for n in (2, 7, 8))
    with store.lock("session:2"):
        result = tgsession(*at(store), "--lock-timeout", "0.2", "import", input=lines)
    assert result.returncode == 1
    assert "line 1: session 'session:2' was not imported" in result.stderr.decode()
    assert result.stdout.decode() == (
        "imported 1 session; kept 1 already stored (--overwrite replaces them)\n"
    )
    assert store.read("session:8") == b'{"n":8}'
    out(tgsession(*at(store), "import", "--overwrite", input=lines))
    assert store.read("session:7") == b'{"n":7}'  # replaced, as asked


def test_migrate_goes_on_past_a_session_it_cannot_read(tmp_path: Path) -> None:
    storage = DiskStorage(tmp_path / "sessions")
    storage.write("session:1", b'{"count":1,"name":"Ann Lee"}')
    _foreign_row(storage, "session:2")
    storage.write("session:3", b'{"count":3,"name":"Cy"}')
    (tmp_path / "mybot.py").write_text(MIGRATING_BOT.format(directory=storage.directory))
    result = tgsession("migrate", "--manager", "mybot:sessions", cwd=tmp_path)
    assert result.returncode == 1
    assert "session 'session:2' was not migrated" in result.stderr.decode()
    assert result.stdout.decode().startswith("migrated 2 sessions to version 3")


def test_migrate_waits_no_longer_than_lock_timeout_in_the_managers_store(
    tmp_path: Path,
) -> None:
    storage = DiskStorage(tmp_path / "sessions")
    storage.write("session:1", b'{"count":1,"name":"Ann Lee"}')
    (tmp_path / "mybot.py").write_text(MIGRATING_BOT.format(directory=storage.directory))
    with storage.lock("session:1"):
        result = tgsession(
            "migrate", "--manager", "mybot:sessions", "--lock-timeout", "0.2", cwd=tmp_path
        )
    assert result.returncode == 1 and "--lock-timeout" in result.stderr.decode()


def test_a_directory_without_a_store_is_refused_but_import_may_begin_one(tmp_path: Path) -> None:
    result = tgsession("--store", str(tmp_path), "ls")
    assert result.returncode == 1 and b"no session store at" in result.stderr
    assert list(tmp_path.iterdir()) == []  # nothing made there
    (tmp_path / "defaultbot.py").write_text(
        "from tgsession import with_session\nsessions = with_session(version=2)\n"
    )
    missing = tmp_path / "not-the-bots-directory"
    migrate = tgsession(
        "migrate", "--manager", "defaultbot:sessions", cwd=tmp_path, TGSESSION_DIR=str(missing)
    )
    assert migrate.returncode == 1 and b"no session store at" in migrate.stderr
    assert not missing.exists()
    target = tmp_path / "new"
    imported = tgsession("--store", str(target), "import", input=b'{"key":"a:1","value":{}}\n')
    assert out(imported) == "imported 1 session\n"
    assert DiskStorage(target).read("a:1") == b"{}"


@pytest.mark.parametrize(
    "args",
    [
        ["--lock-timeout", "nan", "ls"],
        ["--lock-timeout", "-1", "ls"],
        ["ls", "--limit", "-3"],
        ["stats", "--top", "-1"],
        ["--store", "redis://127.0.0.1:6379/0", "--prefix", "a{", "ls"],
        ["migrate", "--manager", "mybot:"],
    ],
    ids=["nan seconds", "negative seconds", "negative limit", "negative top", "brace", "target"],
)
def test_wrong_values_are_usage_errors(store: DiskStorage, args: list[str]) -> None:
    result = tgsession(*at(store)[:0], *args, TGSESSION_STORE=store.directory)
    assert result.returncode == 2, result.stderr
    assert b"Traceback" not in result.stderr


def test_stats_top_0_lists_no_largest_sessions(store: DiskStorage) -> None:
    report = json.loads(out(tgsession(*at(store), "stats", "--top", "0", "--json")))
    assert report["largest"] == [] and report["kinds"]["session"]["sessions"] == 3


@pytest.mark.parametrize(
    ("setup", "said"),
    [
        ("raise RuntimeError('boom')", "importing 'brokenbot' for --manager raised RuntimeError"),
        ("def (:", "importing 'brokenbot' for --manager raised SyntaxError"),
    ],
)
def test_a_manager_module_that_fails_to_import_is_one_line(
    store: DiskStorage, tmp_path: Path, setup: str, said: str
) -> None:
    (tmp_path / "brokenbot.py").write_text(setup)
    result = tgsession(*at(store), "migrate", "--manager", "brokenbot:x", cwd=tmp_path)
    assert result.returncode == 1 and said in result.stderr.decode()
    assert b"Traceback" not in result.stderr


def test_unreachable_redis_is_one_line_without_the_password() -> None:
    result = tgsession("--store", "redis://user:s3cret@127.0.0.1:1/0", "ls")
    assert result.returncode == 1
    assert b"cannot reach Redis at redis://user:***@127.0.0.1:1/0" in result.stderr
    assert b"s3cret" not in result.stderr and b"Traceback" not in result.stderr


def test_import_states_from_a_corrupt_pickle_is_one_line(
    store: DiskStorage, tmp_path: Path
) -> None:
    bad = tmp_path / "states.pkl"
    bad.write_bytes(b"\x80\x04not a pickle")
    result = tgsession(*at(store), "import-states", "--from-pickle", str(bad))
    assert result.returncode == 1 and b"is not a telebot StatePickleStorage file" in result.stderr


def test_import_states_reports_a_state_it_cannot_copy_and_goes_on(
    store: DiskStorage, tmp_path: Path
) -> None:
    good = {"state": "Survey:age", "data": {"name": "Ann"}}
    path = tmp_path / "states.pkl"
    path.write_bytes(pickle.dumps({"telebot:5:7": good, "telebot:5:8": 42, "telebot:5:9": good}))
    with store.lock("state:5:9"):  # a handler holds it
        result = tgsession(
            *at(store), "--lock-timeout", "0.2", "import-states", "--from-pickle", str(path)
        )
    said = result.stderr.decode()
    assert result.returncode == 1 and "Traceback" not in said
    assert "telebot's state 'telebot:5:8' was not imported: its record is of type int" in said
    assert "telebot's state 'telebot:5:9' was not imported: session 'state:5:9' is still" in said
    assert "(wait longer with --lock-timeout SECONDS)" in said
    assert result.stdout.decode() == "imported 1 telebot state\n"
    again = tgsession(*at(store), "import-states", "--from-pickle", str(path))
    assert again.returncode == 1 and again.stdout.decode() == "imported 1 telebot state\n"
    assert store.read("state:5:7") is not None and store.read("state:5:9") is not None


def test_import_states_from_a_missing_file_is_one_line(store: DiskStorage, tmp_path: Path) -> None:
    result = tgsession(*at(store), "import-states", "--from-pickle", str(tmp_path / "none.pkl"))
    said = result.stderr.decode()
    assert result.returncode == 1 and said.count("\n") == 1
    assert "No such file or directory" in said and str(tmp_path / "none.pkl") in said


@pytest.mark.parametrize(
    ("env", "said"),
    [
        ({"EDITOR": 'vim "', "VISUAL": ""}, "cannot read the editor command"),
        ({"EDITOR": "", "VISUAL": ""}, "set $EDITOR to edit a session without a terminal"),
        ({"EDITOR": "/no/such/editor", "VISUAL": ""}, "cannot run the editor"),
    ],
    ids=["unparsable", "none without a terminal", "missing"],
)
def test_edit_refuses_an_editor_it_cannot_run_and_leaves_the_session(
    store: DiskStorage, env: dict[str, str], said: str
) -> None:
    before = store.read("session:1")
    result = tgsession(*at(store), "edit", "session:1", input=b"", **env)
    assert result.returncode == 1 and said in result.stderr.decode()
    assert store.read("session:1") == before


def test_edit_and_rm_on_redis(tmp_path: Path) -> None:
    with redis_storage() as redis:
        redis.write("session:1", b'{"count":1}')
        redis.write("session:2", b'{"count":2}')
        where = ["--store", redis_url(), "--prefix", redis.prefix]
        edited = tgsession(*where, "edit", "session:1", **editing(tmp_path, "count+5"))
        assert out(edited) == "saved session 'session:1'\n"
        assert redis.read("session:1") == b'{"count":6}'
        assert out(tgsession(*where, "rm", "session:2")) == ""
        assert redis.read("session:2") is None


def test_exporting_into_a_pipe_leaves_its_mode_alone(store: DiskStorage, tmp_path: Path) -> None:
    fifo = tmp_path / "export.fifo"  # as /dev/null or /dev/stdout: not a file of the export's
    os.mkfifo(fifo, 0o644)
    received: list[bytes] = []
    reader = threading.Thread(target=lambda: received.append(fifo.read_bytes()))
    reader.start()
    assert out(tgsession(*at(store), "export", "-o", str(fifo))) == ""
    reader.join(30)
    assert received[0].count(b"\n") == 4
    assert fifo.stat().st_mode & 0o777 == 0o644


def test_import_states_from_a_pickle_that_raises_anything_is_one_line(
    store: DiskStorage, tmp_path: Path
) -> None:
    bad = tmp_path / "states.pkl"
    bad.write_bytes(b"\x80\x04cbuiltins\nlist\nK\x01R.")  # list(*1): a TypeError
    result = tgsession(*at(store), "import-states", "--from-pickle", str(bad))
    assert result.returncode == 1 and b"is not a telebot StatePickleStorage file" in result.stderr
    assert b"Traceback" not in result.stderr


def test_a_dry_run_import_makes_no_store(tmp_path: Path) -> None:
    typo = tmp_path / "typo"
    result = tgsession("--store", str(typo), "import", "--dry-run", input=b"")
    assert result.returncode == 1 and b"no session store at" in result.stderr
    assert not typo.exists()


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to give a file to another user")
def test_an_export_does_not_follow_a_link_another_user_left_in_a_shared_directory(
    store: DiskStorage, tmp_path: Path
) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o1777)  # as /tmp
    mine = tmp_path / "mine.txt"
    mine.write_bytes(b"mine")
    planted = shared / "export.jsonl"
    planted.symlink_to(mine)
    os.lchown(planted, 65534, 65534)
    result = tgsession(*at(store), "export", "-o", str(planted))
    assert result.returncode == 1 and b"symbolic link of another user" in result.stderr
    assert mine.read_bytes() == b"mine"
    own = shared / "own.jsonl"  # a link of one's own is followed
    own.symlink_to(tmp_path / "through-link.jsonl")
    out(tgsession(*at(store), "export", "-o", str(own)))
    assert (tmp_path / "through-link.jsonl").read_bytes().count(b"\n") == 4


@pytest.mark.parametrize(
    "layout", ["their directory", "a chain", "a linked directory", "a link, then .."]
)
def test_an_export_is_never_written_through_another_users_link(
    store: DiskStorage, tmp_path: Path, layout: str
) -> None:
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_bytes(b"mine")
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    theirs.chmod(0o777)
    os.chown(theirs, 65534, 65534)
    if layout == "their directory":  # their link, in a directory they own
        target = theirs / "export.txt"
        target.symlink_to(mine / "notes.txt")
        os.lchown(target, 65534, 65534)
    elif layout == "a chain":  # a link of mine to a link of theirs
        (theirs / "link").symlink_to(mine / "notes.txt")
        os.lchown(theirs / "link", 65534, 65534)
        target = tmp_path / "my-link"
        target.symlink_to(theirs / "link")
    elif layout == "a linked directory":  # their link to a directory, then the file's name
        (theirs / "dir").symlink_to(mine)
        os.lchown(theirs / "dir", 65534, 65534)
        target = theirs / "dir" / "notes.txt"
    else:  # their link, then "..": the kernel follows the link before it goes up
        (mine / "sub").mkdir()
        (theirs / "x").symlink_to(mine / "sub")
        os.lchown(theirs / "x", 65534, 65534)
        target = Path(f"{theirs}/x/../notes.txt")
    result = tgsession(*at(store), "export", "-o", str(target))
    assert result.returncode == 1 and b"a symbolic link of another user" in result.stderr
    assert (mine / "notes.txt").read_bytes() == b"mine"


def test_an_export_refuses_another_users_pipe_and_one_nobody_reads(
    store: DiskStorage, tmp_path: Path
) -> None:
    theirs = tmp_path / "theirs.fifo"
    os.mkfifo(theirs, 0o666)
    os.chown(theirs, 65534, 65534)
    reader = os.open(theirs, os.O_RDONLY | os.O_NONBLOCK)  # they read it
    try:
        result = tgsession(*at(store), "export", "-o", str(theirs))
        assert result.returncode == 1 and b"belongs to another user" in result.stderr
        assert os.read(reader, 100) == b""  # nothing reached them
    finally:
        os.close(reader)
    unread = tmp_path / "unread.fifo"
    os.mkfifo(unread, 0o600)
    result = tgsession(*at(store), "export", "-o", str(unread))  # not waited on forever
    assert result.returncode == 1 and b"a pipe that nobody reads" in result.stderr


def test_an_export_to_dev_stdout_appends_as_the_shell_opened_it(
    store: DiskStorage, tmp_path: Path
) -> None:
    log = tmp_path / "log.txt"
    log.write_bytes(b"before\n")
    log.chmod(0o644)
    with open(log, "ab") as appending:
        subprocess.run(
            [sys.executable, "-m", "tgsession", *at(store), "export", "-o", "/dev/stdout"],
            stdout=appending,
            env=child_env(),
            check=True,
            timeout=120,
        )
    assert log.read_bytes().startswith(b"before\n") and log.read_bytes().count(b"\n") == 5
    assert log.stat().st_mode & 0o777 == 0o644


def test_an_export_onto_a_file_of_the_store_by_any_name_is_refused(
    store: DiskStorage, tmp_path: Path
) -> None:
    database = Path(store.directory) / "cache.db"
    (tmp_path / "my-link.jsonl").symlink_to(database)
    with open(database, "rb") as held:  # reached as /dev/fd/N by the command
        names = [str(database), str(tmp_path / "my-link.jsonl"), f"/dev/fd/{held.fileno()}"]
        for name in names:
            result = subprocess.run(
                [sys.executable, "-m", "tgsession", *at(store), "export", "-o", name],
                capture_output=True,
                env=child_env(),
                pass_fds=(held.fileno(),),
                timeout=120,
            )
            assert result.returncode == 1
            assert b"a file of the store itself" in result.stderr or b"/proc" in result.stderr
    assert store.read("session:1") is not None


def test_an_export_replaces_the_name_it_is_given_and_no_other(
    store: DiskStorage, tmp_path: Path
) -> None:
    mine = tmp_path / "mine.conf"
    mine.write_bytes(b"mine")
    mine.chmod(0o666)
    other_name = tmp_path / "export.jsonl"
    os.link(mine, other_name)  # as another user could in a shared directory
    with open(other_name, "rb") as opened_before:  # a reader who had it open before
        out(tgsession(*at(store), "export", "-o", str(other_name)))
        assert opened_before.read() == b"mine"
    assert mine.read_bytes() == b"mine" and mine.stat().st_mode & 0o777 == 0o666
    assert other_name.read_bytes().count(b"\n") == 4
    assert other_name.stat().st_mode & 0o777 == 0o600
    assert [p.name for p in tmp_path.iterdir() if "tgsession-export" in p.name] == []


SLOW_EXPORT = (
    "import sys, time\n"
    "from tgsession.cli import _dump, main\n"
    "encode = _dump.encode\n"
    "_dump.encode = lambda *args: (time.sleep(0.05), encode(*args))[1]\n"
    "sys.exit(main(sys.argv[1:]))\n"
)


@pytest.mark.parametrize("signal_name", ["SIGTERM", "SIGHUP", "SIGINT"])
def test_an_export_stopped_by_a_signal_leaves_the_old_file_and_nothing_else(
    store: DiskStorage, tmp_path: Path, signal_name: str
) -> None:
    import signal

    target = tmp_path / "export.jsonl"
    target.write_bytes(b"the last export\n")
    export = subprocess.Popen(
        [sys.executable, "-c", SLOW_EXPORT, *at(store), "export", "-o", str(target)],
        env=child_env(),
    )
    deadline = time.monotonic() + 60
    while not [p for p in tmp_path.iterdir() if p.name.startswith(".tgsession-export")]:
        assert time.monotonic() < deadline and export.poll() is None
        time.sleep(0.01)
    export.send_signal(getattr(signal, signal_name))
    assert export.wait(60) in (128 + getattr(signal, signal_name), 130)
    assert target.read_bytes() == b"the last export\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["export.jsonl", "sessions"]


def test_an_export_does_not_replace_a_file_that_appeared_while_it_was_written(
    store: DiskStorage, tmp_path: Path
) -> None:
    target = tmp_path / "export.jsonl"
    export = subprocess.Popen(
        [sys.executable, "-c", SLOW_EXPORT, *at(store), "export", "-o", str(target)],
        stderr=subprocess.PIPE,
        env=child_env(),
    )
    deadline = time.monotonic() + 60
    while not [p for p in tmp_path.iterdir() if p.name.startswith(".tgsession-export")]:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    target.write_bytes(b"someone else's\n")
    _, said = export.communicate(timeout=60)
    assert export.returncode == 1 and b"appeared while the export was written" in said
    assert target.read_bytes() == b"someone else's\n"


@pytest.mark.parametrize("name", ["dot", "proc"])
def test_odd_export_paths_are_one_line_errors(
    store: DiskStorage, tmp_path: Path, name: str
) -> None:
    (tmp_path / "dot").symlink_to(".")
    path = "dot" if name == "dot" else "/dev/fd/99"
    result = tgsession(*at(store), "export", "-o", path, cwd=tmp_path)
    assert result.returncode == 1 and result.stderr.count(b"\n") == 1
    assert b"Traceback" not in result.stderr


def test_an_export_to_a_file_with_stdout_closed(store: DiskStorage, tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "tgsession", *at(store), "export", "-o", "out.jsonl"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        cwd=tmp_path,
        env=child_env(),
        preexec_fn=lambda: os.close(1),
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "out.jsonl").read_bytes().count(b"\n") == 4


def test_a_signal_the_caller_ignores_stays_ignored_and_handlers_are_put_back(
    store: DiskStorage, tmp_path: Path
) -> None:
    import signal

    from tgsession.cli import main

    target = tmp_path / "export.jsonl"
    export = subprocess.Popen(  # as under nohup
        [sys.executable, "-c", SLOW_EXPORT, *at(store), "export", "-o", str(target)],
        env=child_env(),
        preexec_fn=lambda: signal.signal(signal.SIGHUP, signal.SIG_IGN),
    )
    deadline = time.monotonic() + 60
    while not [p for p in tmp_path.iterdir() if p.name.startswith(".tgsession-export")]:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    export.send_signal(signal.SIGHUP)
    assert export.wait(60) == 0 and target.read_bytes().count(b"\n") == 4
    before = signal.getsignal(signal.SIGTERM)
    assert main([*at(store), "ls"]) == 0
    assert signal.getsignal(signal.SIGTERM) is before


def test_an_export_where_hard_links_cannot_be_made_still_lands(
    store: DiskStorage, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import errno

    from tgsession.cli._output import open_export

    def no_hard_links(*args: Any, **kwargs: Any) -> None:
        raise OSError(errno.EPERM, "Operation not permitted")  # as on vfat

    monkeypatch.setattr(os, "link", no_hard_links)
    with open_export(str(tmp_path / "new.jsonl"), store.directory) as output:
        output.write(b"line\n")
    assert (tmp_path / "new.jsonl").read_bytes() == b"line\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["new.jsonl", "sessions"]


def test_an_export_into_a_pipe_given_as_dev_fd_n(store: DiskStorage) -> None:
    reader, writer = os.pipe()
    try:
        result = subprocess.run(
            [sys.executable, "-m", "tgsession", *at(store), "export", "-o", f"/dev/fd/{writer}"],
            capture_output=True,
            env=child_env(),
            pass_fds=(writer,),
            timeout=120,
        )
        assert result.returncode == 0, result.stderr
        os.close(writer)
        with os.fdopen(reader, "rb") as received:
            assert received.read().count(b"\n") == 4
    finally:
        with contextlib.suppress(OSError):
            os.close(writer)


@pytest.mark.parametrize("name", ["notes.txt/.", "notes.txt/", "missing/.", "link-with-slash"])
def test_an_export_to_a_path_that_names_a_directory_is_refused(
    store: DiskStorage, tmp_path: Path, name: str
) -> None:
    (tmp_path / "notes.txt").write_bytes(b"notes")
    (tmp_path / "link-with-slash").symlink_to("notes.txt/")
    result = tgsession(*at(store), "export", "-o", name, cwd=tmp_path)
    assert result.returncode == 1
    assert (tmp_path / "notes.txt").read_bytes() == b"notes"
    assert not (tmp_path / "missing").exists()


def test_an_export_to_dot_slash_dash_is_a_file_named_dash(
    store: DiskStorage, tmp_path: Path
) -> None:
    assert out(tgsession(*at(store), "export", "-o", "./-", cwd=tmp_path)) == ""
    assert (tmp_path / "-").read_bytes().count(b"\n") == 4


def test_an_export_into_another_users_file_is_refused(store: DiskStorage, tmp_path: Path) -> None:
    theirs = tmp_path / "theirs.jsonl"
    theirs.write_bytes(b"theirs")
    os.chown(theirs, 65534, 65534)
    result = tgsession(*at(store), "export", "-o", str(theirs))
    assert result.returncode == 1 and b"belongs to another user" in result.stderr
    assert theirs.read_bytes() == b"theirs"
