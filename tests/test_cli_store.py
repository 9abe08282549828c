"""``--store`` and ``TYQW_STORE``: the commands over a folder or a real Redis, run as
subprocesses against a simulator in this test's event loop."""

from __future__ import annotations

import os
import re
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import pytest

from tyqw.stores import FileStore, StoreLocation
from tyqw.testing import BailianSimulator

from .cli_helpers import clean_env, serving, tyqw_async, tyqw_run
from .helpers import RedisProcess, free_port

try:
    from tyqw.stores import RedisStore
except ImportError:  # pragma: no cover - the dev extra installs redis-py
    if os.environ.get("CI"):
        raise
    pytest.skip("RedisStore needs redis-py: pip install 'tyqw[redis]'", allow_module_level=True)

PASSWORD = "pw-cli-5d8e2a7c9b1f"


@pytest.fixture
async def sim() -> AsyncIterator[BailianSimulator]:
    async with BailianSimulator() as simulator:
        yield simulator


def env_for(sim: BailianSimulator, tmp_path: Path, **extra: str) -> dict[str, str]:
    return clean_env(
        tmp_path,
        DASHSCOPE_API_KEY=sim.api_key,
        DASHSCOPE_BASE_URL=sim.base_url,
        DASHSCOPE_APP_ID=sim.app_id,
        **extra,
    )


@pytest.fixture
def password_url(redis_process: RedisProcess, redis_url: str) -> Iterator[str]:
    """The test Redis, reached as a user with a password (which must never be shown)."""
    user = "tyqw-cli"
    redis_process.command("ACL", "SETUSER", user, "on", f">{PASSWORD}", "~*", "+@all")
    yield f"redis://{user}:{PASSWORD}@127.0.0.1:{redis_process.port}/0"
    redis_process.command("ACL", "DELUSER", user)


async def stored(url: str, app_id: str, name: str) -> str | None:
    store = RedisStore.from_url(url)
    try:
        record = await store.get(app_id, name)
    finally:
        await store.aclose()
    return None if record is None else str(record["session_id"])


def no_state_files(tmp_path: Path) -> bool:
    return not list((tmp_path / "xdg-state").rglob("*.json"))


# -- a shared store ----------------------------------------------------------------------


async def test_ask_continues_a_conversation_kept_in_redis(
    sim: BailianSimulator, password_url: str, tmp_path: Path
) -> None:
    """Two `tyqw ask --store redis://...` runs, and one with TYQW_STORE, hold one
    conversation in Redis; no file is written, and the password shows nowhere."""
    env = env_for(sim, tmp_path)
    first = await tyqw_async(env, "ask", "--store", password_url, "我叫小明")
    second = await tyqw_async(env, "ask", "--store", password_url, "我叫什么名字？")
    third = await tyqw_async({**env, "TYQW_STORE": password_url}, "ask", "今天")
    assert [r[0] for r in (first, second, third)] == [0, 0, 0], (first, second, third)
    assert second[1].startswith("你叫小明")
    session_id = await stored(password_url, sim.app_id, "default")
    assert session_id is not None
    assert [r.body["input"].get("session_id") for r in sim.requests] == [
        None,
        session_id,
        session_id,
    ]
    assert no_state_files(tmp_path)
    for _, out, err in (first, second, third):
        assert PASSWORD not in out + err


async def test_chat_session_shows_the_shared_store_and_its_id(
    sim: BailianSimulator, password_url: str, tmp_path: Path
) -> None:
    """/session in a chat over Redis names the store without its password and shows the
    id Redis holds, before this chat's first turn."""
    env = env_for(sim, tmp_path, TYQW_STORE=password_url)
    assert (await tyqw_async(env, "ask", "hello"))[0] == 0
    session_id = await stored(password_url, sim.app_id, "default")
    code, out, err = await tyqw_async(env, "chat", stdin="/session\n")
    assert (code, err) == (0, "")
    assert f"session_id: {session_id}\n" in out
    port = password_url.rsplit(":", 1)[1].split("/")[0]
    assert f"stored in: redis://127.0.0.1:{port}/0 (shared" in out
    assert PASSWORD not in out


async def test_conversations_list_and_clear_over_redis(
    sim: BailianSimulator, redis_url: str, tmp_path: Path
) -> None:
    """conversations list shows what Redis holds; clear forgets by name, then --all."""
    env = env_for(sim, tmp_path, TYQW_STORE=redis_url)
    for name in ("alice", "bob", "carol"):
        assert (await tyqw_async(env, "ask", "--name", name, "hi"))[0] == 0
    code, out, err = await tyqw_async(env, "conversations", "list")
    assert (code, err) == (0, "")
    header, *rows = out.splitlines()
    assert header.split() == ["NAME", "APP", "ID", "SESSION", "ID", "LAST", "USED"]
    assert rows[0].split()[0] == "carol"  # the most recently used first
    for row in rows:
        name, app_id, session_id, day, clock = row.split()
        assert (app_id, session_id) == (sim.app_id, await stored(redis_url, app_id, name))
        assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", f"{day} {clock}")
    assert sorted(row.split()[0] for row in rows) == ["alice", "bob", "carol"]

    code, _, err = await tyqw_async(env, "sessions", "clear", "alice")
    assert (code, err) == (0, "tyqw: forgot 1 conversation named 'alice'\n")
    assert await stored(redis_url, sim.app_id, "alice") is None
    assert await stored(redis_url, sim.app_id, "bob") is not None
    code, _, err = await tyqw_async(env, "conversations", "clear", "--all")
    assert (code, err) == (0, "tyqw: forgot 2 conversations\n")
    code, out, err = await tyqw_async(env, "conversations", "list")
    port = redis_url.rsplit(":", 1)[1].split("/")[0]
    assert (code, out, err) == (
        0,
        "",
        f"tyqw: no stored conversations in redis://127.0.0.1:{port}/0\n",
    )


async def test_a_flag_wins_over_tyqw_store(
    sim: BailianSimulator, redis_url: str, tmp_path: Path
) -> None:
    """--state-dir, or --store with a folder or file:// URL, beats TYQW_STORE: the
    conversation goes to that folder, not to Redis."""
    env = env_for(sim, tmp_path, TYQW_STORE=redis_url)
    runs = [
        ("--state-dir", str(tmp_path / "a")),
        ("--store", str(tmp_path / "b")),
        ("--store", (tmp_path / "c").as_uri()),
    ]
    for flag, value in runs:
        code, _, err = await tyqw_async(env, "ask", flag, value, "hi")
        assert (code, err) == (0, "")
        assert FileStore(Path(value.removeprefix("file://"))).get_now(sim.app_id, "default")
    assert await stored(redis_url, sim.app_id, "default") is None


# -- one reading of a store location, in every command -----------------------------------


async def _stored_at(value: str, app_id: str, name: str) -> str | None:
    """The session id a store location holds for (app_id, name), read through the SDK."""
    store = StoreLocation.parse(value).open()
    try:
        record = await store.get(app_id, name)
    finally:
        await store.aclose()
    return None if record is None else str(record["session_id"])


async def _use(
    command: str, value: str, source: str, sim: BailianSimulator, tmp_path: Path
) -> tuple[int, str, str, str]:
    """Run COMMAND with VALUE as its store (--store or TYQW_STORE): its status, stdout,
    stderr, and the (app id, name) its conversation is kept under."""
    flag = ["--store", value] if source == "flag" else []
    extra = {"TYQW_STORE": value} if source == "env" else {}
    if command == "serve":  # offline: the relay's own simulator, the one local user
        async with (
            serving(clean_env(tmp_path, **extra), *flag, cwd=tmp_path) as root,
            aiohttp.ClientSession() as http,
        ):
            async with http.get(f"{root}/relay.json") as settings:
                [app_id] = (await settings.json())["app_ids"]
            url = f"{root}/api/v1/apps/{app_id}/completion"
            async with http.post(url, json={"input": {"prompt": "hi"}}) as answer:
                return answer.status, await answer.text(), "", f"{app_id} local"
    env = env_for(sim, tmp_path, **extra)
    where = f"{sim.app_id} default"
    if command == "chat":
        return (*await tyqw_async(env, "chat", *flag, stdin="hi\n"), where)
    if command == "conversations":
        return (*await tyqw_async(env, "conversations", "list", *flag), where)
    return (*await tyqw_async(env, "ask", *flag, "hi"), where)


@pytest.mark.parametrize("source", ["flag", "env"])
@pytest.mark.parametrize("command", ["ask", "chat", "conversations", "serve"])
@pytest.mark.parametrize("spelling", ["file-url", "upper-case-redis", "memory"])
async def test_every_command_reads_a_store_location_alike(
    sim: BailianSimulator,
    redis_url: str,
    tmp_path: Path,
    spelling: str,
    command: str,
    source: str,
) -> None:
    """file:///x is that folder, REDIS:// is Redis, and memory is refused where
    conversations must outlive the command, for chat, ask, conversations and serve, from
    --store or TYQW_STORE alike."""
    value = {
        "file-url": (tmp_path / "conversations").as_uri(),
        "upper-case-redis": redis_url.replace("redis://", "REDIS://"),
        "memory": "memory",
    }[spelling]
    if command == "conversations" and spelling != "memory":  # something there to list
        seeded = await tyqw_async(env_for(sim, tmp_path), "ask", "--store", value.lower(), "hi")
        assert seeded[0] == 0, seeded
    code, out, err, where = await _use(command, value, source, sim, tmp_path)
    if spelling == "memory" and command != "serve":
        named = "--store" if source == "flag" else "TYQW_STORE"
        assert (code, out) == (2, "")
        assert err.startswith(f"tyqw: error: {named}: a memory store forgets every conversation")
        return
    assert code in (0, 200), (code, out, err)
    app_id, name = where.split()
    if spelling == "memory":  # the relay's own memory: nothing on disk
        assert no_state_files(tmp_path)
        return
    session_id = await _stored_at(value, app_id, name)
    assert session_id is not None
    if command == "conversations":
        assert session_id in out


@pytest.mark.parametrize(
    ("text", "kind", "shown"),
    [
        pytest.param("memory", "memory", "memory", id="memory"),
        pytest.param(" Memory ", "memory", "memory", id="memory-any-case"),
        pytest.param("/srv/bot", "folder", "/srv/bot", id="path"),
        pytest.param("file:///srv/bot%20x", "folder", "/srv/bot x", id="file-url"),
        pytest.param("FILE://localhost/srv/bot", "folder", "/srv/bot", id="file-url-upper"),
        pytest.param(f"REDIS://:{PASSWORD}@h:1/2", "redis", "redis://h:1/2", id="redis-upper"),
        pytest.param(f"rediss://u:{PASSWORD}@h/0", "redis", "rediss://h/0", id="rediss"),
        pytest.param("unix:///run/redis.sock", "redis", "unix:///run/redis.sock", id="unix"),
    ],
)
def test_a_store_location_is_read_one_way(text: str, kind: str, shown: str) -> None:
    """StoreLocation.parse: the kind and the name messages show, never a password."""
    location = StoreLocation.parse(text)
    assert (location.kind, location.shown) == (kind, shown)
    assert PASSWORD not in repr(location) + str(location)
    if kind == "memory":
        with pytest.raises(ValueError, match=r"^TYQW_STORE: a memory store forgets"):
            StoreLocation.parse(text, memory=False, source="TYQW_STORE")


# -- mistakes and failures ----------------------------------------------------------------


@pytest.mark.parametrize("command", [["ask", "hi"], ["chat"], ["conversations", "list"]])
def test_store_and_state_dir_together_are_refused(command: list[str], tmp_path: Path) -> None:
    """--store and --state-dir together: one line, exit 2."""
    result = tyqw_run(clean_env(tmp_path), *command, "--store", "x", "--state-dir", "y")
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr == "tyqw: error: pass --store or --state-dir, not both\n"


@pytest.mark.parametrize(
    ("value", "why"),
    [
        ("memory", "--store: a memory store forgets every conversation when tyqw exits; "),
        ("ftp://x/y", "--store: ftp:// is no kind of store tyqw knows; "),
        (
            f"redis://:{PASSWORD}@127.0.0.1:99999/0",
            "--store: invalid Redis URL redis://127.0.0.1:(?)/0: the port is not a number from "
            "1 to 65535",
        ),
        (
            f"redis://:{PASSWORD}@127.0.0.1/zero",
            "--store: invalid Redis URL redis://127.0.0.1/(?): the database is not a number",
        ),
        (
            f"redis://127.0.0.1/0?password={PASSWORD}&socket_timeout=soon",
            "--store: invalid Redis URL redis://127.0.0.1/0; expected a folder, ",
        ),
        (
            f"redis://:{PASSWORD}@[::1/0",
            "--store: invalid Redis URL redis://(unparsable); expected a folder, ",
        ),
        ("file://elsewhere/x", "--store: a file:// store must be on this machine"),
    ],
)
def test_a_bad_store_is_one_line_and_exit_2(value: str, why: str, tmp_path: Path) -> None:
    """A store tyqw cannot use: one line saying why, exit 2, no password, no request."""
    for command in (["ask", "hi"], ["conversations", "list"]):
        result = tyqw_run(clean_env(tmp_path), *command, "--store", value)
        assert (result.returncode, result.stdout) == (2, ""), result
        assert result.stderr.count("\n") == 1
        assert result.stderr.startswith(f"tyqw: error: {why}")
        assert PASSWORD not in result.stderr


def test_tyqw_store_mistakes_name_the_variable(tmp_path: Path) -> None:
    """A bad TYQW_STORE is reported under its own name."""
    result = tyqw_run(clean_env(tmp_path, TYQW_STORE="memory"), "ask", "hi")
    assert result.returncode == 2
    assert result.stderr.startswith("tyqw: error: TYQW_STORE: a memory store forgets")


async def test_an_unreachable_redis_is_one_line_and_exit_1(
    sim: BailianSimulator, tmp_path: Path
) -> None:
    """Nothing listens at the Redis URL: ask (with or without --new), chat and
    conversations say so in one line each, exit 1, send nothing, and show no password."""
    url = f"redis://:{PASSWORD}@127.0.0.1:{free_port()}/0"
    env = env_for(sim, tmp_path, TYQW_STORE=url)
    runs = {
        "ask": await tyqw_async(env, "ask", "hi"),
        "ask --new": await tyqw_async(env, "ask", "--new", "hi"),
        "list": await tyqw_async(env, "conversations", "list"),
        "clear": await tyqw_async(env, "conversations", "clear", "--all"),
    }
    for what, (code, out, err) in runs.items():
        assert (code, out) == (1, ""), what
        assert re.fullmatch(
            r"tyqw: error: RedisStore: cannot \w+ (a conversation|conversations) "
            r"\(ConnectionError: .*\) — check the conversation store \(--store or "
            r"TYQW_STORE\) and that it is reachable\n",
            err,
        ), (what, err)
        assert PASSWORD not in err
    code, out, err = await tyqw_async(env, "chat", stdin="hello\n")
    assert code == 0 and out == ""
    assert err.startswith("error: RedisStore: cannot lock a conversation (ConnectionError")
    assert err.count("\n") == 1 and PASSWORD not in err
    assert sim.requests == []


@pytest.mark.parametrize("command", [["ask"], ["chat"], ["conversations", "list"]])
def test_help_names_the_store_variable(command: list[str], tmp_path: Path) -> None:
    """--help of each command offers --store and names TYQW_STORE."""
    result = tyqw_run(clean_env(tmp_path), *command, "--help")
    assert result.returncode == 0
    assert "--store URL" in result.stdout
    assert "TYQW_STORE" in result.stdout
