"""The conversation store under faults: SIGKILL mid-write, concurrent writers, a state
folder that cannot be used, and owner-only permissions throughout.

The crash and concurrency tests run a separate interpreter (a fresh, single-threaded
process) that forks the writers, so a process really dies at a random instant inside
``save()``; the test asserts on what that interpreter saw.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import shutil
import stat
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

import tyqw
import tyqw._ledger
from tyqw import Session
from tyqw.stores import FileStore
from tyqw.stores._base import begin_turn, end_turn
from tyqw.testing import BailianSimulator

from .helpers import SessionFactory, sim_session, stored_file

SUBPROCESS_BOUND = 60.0


def run_script(script: str, *args: object) -> dict[str, Any]:
    """Run ``script`` in a fresh interpreter; it prints one JSON object as its result."""
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script), *map(str, args)],
        capture_output=True,
        text=True,
        timeout=SUBPROCESS_BOUND,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout)
    return result


KILL_WRITERS = """
    import json, logging, os, random, signal, sys, time
    from pathlib import Path
    from tyqw import Session, stored_conversations

    directory, rounds = Path(sys.argv[1]), int(sys.argv[2])
    warnings = []

    class Collect(logging.Handler):
        def emit(self, record):
            warnings.append(record.getMessage())

    logging.getLogger("tyqw").addHandler(Collect(logging.WARNING))
    Session("app", api_key="sk-x", state_dir=directory).session_id = "id-start"
    bad, killed_mid_loop = [], 0
    for r in range(rounds):
        pid = os.fork()
        if pid == 0:  # the writer: rewrite the id until killed
            session = Session("app", api_key="sk-x", state_dir=directory)
            n = 0
            while True:
                n += 1
                # Ids of varying length, so that a torn write could not look whole.
                session.session_id = f"id-{r}-{n}-" + "x" * (n * 7 % 300)
        time.sleep(random.uniform(0, 0.004))
        os.kill(pid, signal.SIGKILL)
        _, status = os.waitpid(pid, 0)
        killed_mid_loop += os.WIFSIGNALED(status)
        reader = Session("app", api_key="sk-x", state_dir=directory)
        if reader.session_id is None or not reader.session_id.startswith("id-"):
            bad.append([r, reader.session_id, reader.store_path.read_bytes()[:100].hex()])
    listed = stored_conversations(directory)
    print(json.dumps({
        "bad": bad,
        "warnings": warnings,
        "killed": killed_mid_loop,
        "listed": [[c.name, c.session_id] for c in listed],
        "mode": os.stat(listed[0].path).st_mode & 0o777 if listed else 0,
    }))
"""


def test_sigkill_mid_write_never_leaves_an_unreadable_file(state_dir: Path) -> None:
    """A writer killed at random moments, 150 times: the file is always whole and 0600."""
    result = run_script(KILL_WRITERS, state_dir, 150)
    assert result["killed"] == 150
    assert result["bad"] == []
    assert result["warnings"] == []  # no "unreadable conversation file" either
    [[name, session_id]] = result["listed"]  # leftover temp files are not conversations
    assert name == "default" and session_id.startswith("id-")
    assert result["mode"] == 0o600


TWO_WRITERS = """
    import json, os, sys
    from pathlib import Path
    from tyqw import Session

    directory, count = Path(sys.argv[1]), int(sys.argv[2])
    Session("app", api_key="sk-x", state_dir=directory).session_id = "id-start"
    children = []
    for who in ("a", "b"):
        pid = os.fork()
        if pid == 0:
            session = Session("app", api_key="sk-x", state_dir=directory)
            for n in range(count):
                session.session_id = f"{who}-{n}-" + "y" * (n % 50)
            os._exit(0)
        children.append(pid)
    seen, bad, running = set(), [], len(children)
    while running:
        # Read while both write: every read sees one whole id or the other.
        session_id = Session("app", api_key="sk-x", state_dir=directory).session_id
        if session_id is None or session_id.split("-")[0] not in ("id", "a", "b"):
            bad.append(session_id)
        seen.add(session_id.split("-")[0] if session_id else None)
        pid, status = os.waitpid(-1, os.WNOHANG)
        running -= pid != 0
    final = Session("app", api_key="sk-x", state_dir=directory)
    print(json.dumps({
        "bad": bad,
        "seen": sorted(map(str, seen)),
        "final": final.session_id,
        "mode": os.stat(final.store_path).st_mode & 0o777,
        "files": sorted(p.name for p in directory.iterdir() if not p.name.startswith(".")),
    }))
"""


def test_two_processes_writing_one_conversation(state_dir: Path) -> None:
    """Two processes rewrite the same conversation: readers and the end see valid ids."""
    result = run_script(TWO_WRITERS, state_dir, 2000)
    assert result["bad"] == []
    last = "y" * (1999 % 50)
    assert result["final"] in (f"a-1999-{last}", f"b-1999-{last}")
    assert result["mode"] == 0o600
    assert len(result["files"]) == 1  # no temp files left behind by clean writers


@pytest.mark.parametrize(
    "layout", ["under-a-file", "is-a-file"], ids=["path-under-a-file", "path-is-a-file"]
)
async def test_unusable_state_dir_warns_once_and_keeps_going(
    sim: BailianSimulator,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    layout: str,
) -> None:
    """One clear warning for the process; the conversation goes on in memory."""
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    state_dir = blocker / "state" if layout == "under-a-file" else blocker
    caplog.set_level(logging.WARNING, logger="tyqw")

    def session(name: str = "default") -> Session:
        return sim_session(sim, state_dir, name=name)

    async with session() as s:
        first = await s.send("my name is Ada")
        second = await s.send("what's my name?")
        assert second.session_id == first.session_id and "Ada" in second.text
        assert sim.requests[-1].body["input"]["session_id"] == first.session_id
        s.clear()
        s.session_id = first.session_id
        assert "Ada" in (await s.send("what's my name?")).text
    async with session("other") as other:  # a second Session in the same process
        await other.send("hi")
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]
    message = warnings[0].getMessage()
    assert str(state_dir) in message and "memory" in message and "state_dir" in message
    assert blocker.read_text() == "not a folder"
    assert tyqw.stored_conversations(state_dir) == []


async def test_files_stay_owner_only(make_session: SessionFactory, state_dir: Path) -> None:
    """0600 files and a 0700 folder, whatever the umask and the file's mode before."""
    old_umask = os.umask(0)
    try:
        session = make_session()
        await session.send("hi")
        path = stored_file(session)
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
        assert stat.S_IMODE(os.stat(state_dir).st_mode) == 0o700
        os.chmod(path, 0o644)  # loosened by hand, or restored from a backup
        session.session_id = "f" * 32
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
        session.clear()
        await session.send("hi again")
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
        async with FileStore(state_dir).lock(session.app_id, session.name):  # a lock file
            pass
        for folder, _, files in os.walk(state_dir):
            assert stat.S_IMODE(os.stat(folder).st_mode) == 0o700, folder
            for name in files:
                assert stat.S_IMODE(os.stat(Path(folder, name)).st_mode) == 0o600, name
    finally:
        os.umask(old_umask)


# -- hostile files: anything but a small regular file of the right shape -----------------

APP = "app"
GOOD = {"app_id": APP, "name": "alice", "session_id": "s" * 32}


def plant(path: Path, kind: str) -> None:
    """Put something hostile where the conversation's file belongs."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "directory":
        path.mkdir()
    elif kind == "huge-sparse":
        with path.open("wb") as f:
            f.truncate(1 << 30)
    elif kind == "symlink":  # to a record that would be right: still refused
        elsewhere = path.parent.parent / "elsewhere.json"
        elsewhere.write_text(json.dumps(GOOD))
        path.symlink_to(elsewhere)
    elif kind == "symlink-to-device":
        path.symlink_to("/dev/zero")
    else:
        path.write_bytes(HOSTILE_BYTES[kind])


HOSTILE_BYTES = {
    "deep-list": b"[" * 60_000,
    "deep-in-record": b'{"app_id":"app","name":"alice","session_id":"x","usage":' + b"{" * 30_000,
    "over-the-cap": json.dumps({**GOOD, "pad": "x" * 70_000}).encode(),
    "invalid-utf8": b'{"app_id":"app","name":"alice","session_id":"\xff\xfe"}',
    "nul-bytes": b"\0" * 100,
    "empty": b"",
    "a-list": json.dumps([GOOD]).encode(),
    "id-a-number": json.dumps({**GOOD, "session_id": 5}).encode(),
    "id-empty": json.dumps({**GOOD, "session_id": ""}).encode(),
    "app-id-a-list": json.dumps({**GOOD, "app_id": [APP]}).encode(),
    "usage-a-string": json.dumps({**GOOD, "usage": "lots"}).encode(),
    "usage-count-a-string": json.dumps({**GOOD, "usage": {"m": {"input_tokens": "1"}}}).encode(),
    "updated-at-a-string": json.dumps({**GOOD, "updated_at": "yesterday"}).encode(),
    "huge-integer": b'{"app_id":"app","name":"alice","session_id":"x","n":1' + b"0" * 9000 + b"}",
    "another-conversation": json.dumps({**GOOD, "name": "bob"}).encode(),
}
HOSTILE = [
    "fifo",
    "directory",
    "huge-sparse",
    "symlink",
    "symlink-to-device",
    *(k for k in HOSTILE_BYTES if k != "huge-integer"),
]


@pytest.mark.parametrize("kind", HOSTILE)
async def test_a_hostile_file_means_no_conversation_at_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, kind: str
) -> None:
    """FileStore, Session() and the listings: None with one warning, never a hang."""
    store = FileStore(tmp_path / "state")
    path = store.path(APP, "alice")
    plant(path, kind)
    caplog.set_level(logging.WARNING, logger="tyqw")
    try:
        found = await asyncio.wait_for(asyncio.to_thread(store.get_now, APP, "alice"), 5)
        assert found is None
        assert len(caplog.records) == 1 and str(path) in caplog.records[0].getMessage()
        caplog.clear()
        session = await asyncio.wait_for(
            asyncio.to_thread(
                Session, APP, name="alice", api_key="sk-x", state_dir=store.directory
            ),
            5,
        )
        assert session.session_id is None and len(caplog.records) == 1
        caplog.clear()
        assert (
            await asyncio.wait_for(
                asyncio.to_thread(tyqw.stored_conversations, store.directory), 5
            )
            == []
        )
        assert [c async for c in store.conversations()] == []
        assert len(caplog.records) == 2
    finally:
        if kind == "fifo":  # had a read blocked on the FIFO, let its thread go
            with contextlib.suppress(OSError):
                os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK))


def test_a_huge_integer_is_damage_or_a_number_never_a_crash(tmp_path: Path) -> None:
    """A 9,000-digit number in the file: read or refused, as the Python allows, no error."""
    store = FileStore(tmp_path / "state")
    plant(store.path(APP, "alice"), "huge-integer")
    found = store.get_now(APP, "alice")
    assert found is None or found["session_id"] == "x"


async def test_a_turn_replaces_a_damaged_file(tmp_path: Path) -> None:
    """After a damaged file, the next write stores a whole record in its place."""
    store = FileStore(tmp_path / "state")
    plant(store.path(APP, "alice"), "deep-list")
    store.set_now(APP, "alice", {"session_id": "fresh"})
    assert store.get_now(APP, "alice") == {"session_id": "fresh"}


# -- tyqw 0.1's files, and the layout ------------------------------------------------------


def read_like_0_1(path: Path) -> str | None:
    """tyqw 0.1's reader, as it shipped: what an old process sees in a new file."""
    record = json.loads(path.read_bytes())
    if not isinstance(record, dict) or not all(
        isinstance(record.get(key), str) and record[key]
        for key in ("app_id", "name", "session_id")
    ):
        return None
    return str(record["session_id"])


def test_files_are_read_by_and_from_tyqw_0_1(tmp_path: Path) -> None:
    """0.1's file (its name, its JSON) is read; 0.1 reads the session_id we write."""
    directory = tmp_path / "state"
    directory.mkdir()
    name = "小明"
    digest = hashlib.sha256(f"{APP}\0{name}".encode()).hexdigest()[:32]
    old = directory / f"{digest}.json"
    old.write_bytes(
        json.dumps(
            {"app_id": APP, "name": name, "session_id": "old-id"}, ensure_ascii=False
        ).encode()
    )
    store = FileStore(directory)
    assert store.path(APP, name) == old
    assert store.get_now(APP, name) == {"session_id": "old-id"}
    [listed] = tyqw.stored_conversations(directory)
    assert (listed.app_id, listed.name, listed.session_id) == (APP, name, "old-id")
    usage = {"qwen-max": {"input_tokens": 3, "output_tokens": 4}}
    store.set_now(APP, name, {"session_id": "new-id", "usage": usage, "updated_at": 5.0})
    assert read_like_0_1(old) == "new-id"


def test_stale_temporaries_go_and_fresh_ones_stay(tmp_path: Path) -> None:
    """A temporary file a killed writer left goes at the next save; a younger one stays."""
    store = FileStore(tmp_path / "state")
    store.set_now(APP, "alice", {"session_id": "first"})
    temporaries = store.directory / ".tmp"
    stale, fresh = temporaries / "killed.tmp", temporaries / "writing.tmp"
    for path in (stale, fresh):
        path.write_text("{")
    os.utime(stale, (1, 1))
    store.set_now(APP, "bob", {"session_id": "f" * 32})
    assert not stale.exists() and fresh.exists()
    assert sorted(p.name for p in store.directory.glob("*.json")) == sorted(
        [store.path(APP, "alice").name, store.path(APP, "bob").name]
    )
    assert {c.session_id for c in tyqw.stored_conversations(store.directory)} == {
        "first",
        "f" * 32,
    }


async def test_an_unusable_folder_keeps_conversations_in_memory(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Writes, reads, locks and turns go on in memory, with one warning and no error."""
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    store = FileStore(blocker / "state")
    caplog.set_level(logging.WARNING, logger="tyqw")
    store.set_now(APP, "alice", {"session_id": "kept"})
    assert store.get_now(APP, "alice") == {"session_id": "kept"}
    held, found = await asyncio.wait_for(begin_turn(store, APP, "alice"), 5)
    assert found == {"session_id": "kept"}
    await end_turn(store, held, APP, "alice", {"session_id": "next"})
    assert FileStore(blocker / "state").get_now(APP, "alice") == {"session_id": "next"}
    store.delete_now(APP, "alice")
    assert store.get_now(APP, "alice") is None
    assert len(caplog.records) == 1 and "memory" in caplog.records[0].getMessage()
    assert blocker.read_text() == "not a folder"


def test_a_folder_in_place_of_the_file_is_named_and_kept_in_memory(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A write blocked by a folder in the file's place warns about that file only."""
    store = FileStore(tmp_path / "state")
    plant(store.path(APP, "alice"), "directory")
    caplog.set_level(logging.WARNING, logger="tyqw")
    store.set_now(APP, "alice", {"session_id": "kept"})
    assert store.get_now(APP, "alice") == {"session_id": "kept"}
    store.set_now(APP, "bob", {"session_id": "on-disk"})
    assert json.loads(store.path(APP, "bob").read_text())["session_id"] == "on-disk"
    [warning] = caplog.records
    assert str(store.path(APP, "alice")) in warning.getMessage()


# -- processes sharing the folder: a stale copy never wins ---------------------------------

CHANGE = """
    import json, sys
    from tyqw import Session

    directory, app_id, how = sys.argv[1], sys.argv[2], sys.argv[3]
    session = Session(app_id, api_key="sk-x", state_dir=directory)
    if how == "clear":
        session.clear()
    else:
        session.session_id = how
    print(json.dumps({"seen": session.session_id}))
"""

OTHER_ID = "f" * 32


@pytest.mark.parametrize("how", ["clear", OTHER_ID], ids=["clear", "assign"])
async def test_another_process_change_during_a_turn_is_not_undone(
    make_session: SessionFactory, state_dir: Path, monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    """Another process clears the conversation (or stores another id) while a turn runs:
    the turn's end does not write its older copy over that change."""
    monkeypatch.setattr(tyqw._ledger, "USAGE_WRITE_INTERVAL", 0.0)  # every turn writes
    session = make_session()
    await session.send("my name is Ada")
    app_id = session.app_id
    session.once("message", lambda message: run_script(CHANGE, state_dir, app_id, how))
    await session.send("a turn while another process changes the conversation")
    stored = FileStore(state_dir).get_now(app_id, "default")
    assert (stored and stored["session_id"]) == (None if how == "clear" else OTHER_ID)


WRITE = """
    import json, sys
    from tyqw.stores import FileStore

    directory, app_id, name, session_id = sys.argv[1:5]
    FileStore(directory).set_now(app_id, name, {"session_id": session_id})
    print("{}")
"""


def test_a_record_kept_in_memory_does_not_shadow_a_newer_one_on_disk(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A write that failed (the folder briefly unusable) is kept in memory only until
    another process stores a newer record; then that one is read."""
    store = FileStore(tmp_path / "state")
    store.set_now(APP, "alice", {"session_id": "old"})
    temporaries = store.directory / ".tmp"
    os.rmdir(temporaries)
    temporaries.write_text("in the way")  # writes fail, as on a full disk
    caplog.set_level(logging.WARNING, logger="tyqw")
    store.set_now(APP, "alice", {"session_id": "mine"})
    assert store.get_now(APP, "alice") == {"session_id": "mine"}  # kept in memory
    assert "memory" in caplog.records[0].getMessage()
    temporaries.unlink()  # the disk is fine again; another process stores a newer id
    run_script(WRITE, store.directory, APP, "alice", "theirs")
    assert store.get_now(APP, "alice") == {"session_id": "theirs"}
    assert FileStore(store.directory).get_now(APP, "alice") == {"session_id": "theirs"}


async def test_a_lock_folder_deleted_under_a_turn_never_lets_a_stale_copy_win(
    tmp_path: Path,
) -> None:
    """The documented limit: with the state folder deleted while a turn holds the lock,
    another process can take the lock too, but the first turn's older copy does not
    overwrite what that process stored."""
    store = FileStore(tmp_path / "state")
    store.set_now(APP, "alice", {"session_id": "before"})
    held, found = await asyncio.wait_for(begin_turn(store, APP, "alice"), 5)
    assert found == {"session_id": "before"}
    shutil.rmtree(store.directory)
    run_script(TURN, store.directory, APP, "alice", "theirs")
    await end_turn(store, held, APP, "alice", {"session_id": "mine"})
    assert store.get_now(APP, "alice") == {"session_id": "theirs"}


TURN = """
    import asyncio, json, sys
    from tyqw.stores import FileStore
    from tyqw.stores._base import begin_turn, end_turn

    directory, app_id, name, session_id = sys.argv[1:5]

    async def main():
        store = FileStore(directory)
        held, _ = await asyncio.wait_for(begin_turn(store, app_id, name), 10)
        await end_turn(store, held, app_id, name, {"session_id": session_id})

    asyncio.run(main())
    print("{}")
"""
