"""The ``tyqw`` command, run as a subprocess against the simulator.

Three ways to reach a simulator: ``--offline`` / no key (in-process in the child), an
external ``tyqw simulate --port 0`` process, and a ``BailianSimulator`` in the test's own
event loop (for fault injection). The chat in a terminal is in ``test_chat.py``, the
checks of what the command line reads in ``test_cli_input.py``.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

import tyqw
from tyqw._cli import main
from tyqw.testing import BailianSimulator, Fault

from .cli_helpers import (
    BOUND,
    NO_KEY_NOTICE,
    POSIX_ONLY,
    clean_env,
    command,
    read_until,
    tyqw_async,
    tyqw_run,
)

OFFLINE_NOTICE = (
    "tyqw: --offline: using the built-in offline simulator (canned replies); "
    "your key and app are not used."
)
CANARY_KEY = "sk-canary-4f9d2b7e1a6c"


# -- tyqw ask, offline ----------------------------------------------------------------


def test_ask_without_key_uses_simulator_and_says_so_on_stderr(tmp_path: Path) -> None:
    """No key: the reply goes to stdout, the one-line simulator notice to stderr."""
    result = tyqw_run(clean_env(tmp_path), "ask", "你好，我叫小明")
    assert result.returncode == 0
    assert (
        result.stdout == "很高兴认识你，小明！我记住你的名字了，之后可以问我「我叫什么名字」。\n"
    )
    assert result.stderr == NO_KEY_NOTICE + "\n"


def test_offline_flag_ignores_the_key(tmp_path: Path) -> None:
    """--offline uses the simulator even with a key and app id set, and never sends them."""
    env = clean_env(tmp_path, DASHSCOPE_API_KEY=CANARY_KEY, DASHSCOPE_APP_ID="real-app")
    result = tyqw_run(env, "ask", "--offline", "--delay", "0", "hello")
    assert result.returncode == 0
    assert result.stdout.startswith("Hello! I'm the local Bailian simulator")
    assert result.stderr == OFFLINE_NOTICE + "\n"


async def test_two_offline_chats_at_once_keep_their_own_context(tmp_path: Path) -> None:
    """Two offline `tyqw chat` runs at the same time, same --name, same state folder:
    each remembers its own conversation, whatever the other does between its turns."""
    env = clean_env(tmp_path)
    chats = [
        await asyncio.create_subprocess_exec(
            *command("chat", "--delay", "0"),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
        )
        for _ in range(2)
    ]

    async def say(chat: asyncio.subprocess.Process, prompt: str) -> str:
        assert chat.stdin is not None and chat.stdout is not None
        chat.stdin.write(prompt.encode() + b"\n")
        await chat.stdin.drain()
        return (await asyncio.wait_for(chat.stdout.readline(), BOUND)).decode().rstrip("\n")

    first, second = chats
    try:
        assert (await say(first, "你好，我叫小明")).startswith("很高兴认识你，小明")
        assert (await say(second, "你好，我叫小红")).startswith("很高兴认识你，小红")
        assert (await say(first, "我叫什么名字？")).startswith("你叫小明。")
        assert (await say(second, "我叫什么名字？")).startswith("你叫小红。")
        for chat in chats:
            _, err = await asyncio.wait_for(chat.communicate(b""), BOUND)
            assert (chat.returncode, err.decode()) == (0, NO_KEY_NOTICE + "\n")
    finally:
        for chat in chats:
            if chat.returncode is None:
                chat.kill()
                await chat.wait()


def test_ask_json_writes_one_object_per_message(tmp_path: Path) -> None:
    """--json: NDJSON with delta, text, session_id, finish_reason, usage, request_id."""
    result = tyqw_run(clean_env(tmp_path), "ask", "--json", "讲个笑话")
    assert result.returncode == 0
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(lines) > 2
    keys = {"delta", "text", "session_id", "finish_reason", "usage", "request_id"}
    assert all(set(line) == keys for line in lines)
    assert "".join(line["delta"] for line in lines) == lines[-1]["text"]
    assert lines[-1]["text"].startswith("第1轮：你说「讲个笑话」")
    assert [line["finish_reason"] for line in lines] == [None] * (len(lines) - 1) + ["stop"]
    assert len({line["session_id"] for line in lines}) == 1
    assert lines[-1]["usage"]["models"][0]["output_tokens"] > 0
    assert "讲个笑话" in result.stdout  # ensure_ascii=False: readable in a pipe


def test_ask_reads_the_prompt_from_stdin(tmp_path: Path) -> None:
    """`tyqw ask -` reads the prompt from stdin."""
    result = tyqw_run(clean_env(tmp_path), "ask", "--delay", "0", "-", stdin="my name is Ada\n")
    assert result.returncode == 0
    assert result.stdout.startswith("Nice to meet you, Ada!")


def test_ask_joins_words(tmp_path: Path) -> None:
    """Unquoted words form one prompt."""
    result = tyqw_run(clean_env(tmp_path), "ask", "--delay", "0", "my", "name", "is", "Ada")
    assert result.stdout.startswith("Nice to meet you, Ada!")


def test_version_and_help(tmp_path: Path) -> None:
    """--version prints the version; --help exits 0 and lists the commands."""
    version = tyqw_run(clean_env(tmp_path), "--version")
    assert (version.returncode, version.stdout) == (0, f"tyqw {tyqw.__version__}\n")
    help_ = tyqw_run(clean_env(tmp_path), "--help")
    assert help_.returncode == 0
    for name in ("chat", "ask", "conversations (sessions)", "simulate"):
        assert name in help_.stdout


def test_console_script_is_installed(tmp_path: Path) -> None:
    """The `tyqw` console script next to this Python runs the same main()."""
    script = Path(sys.executable).with_name("tyqw.exe" if os.name == "nt" else "tyqw")
    if not script.exists():
        pytest.skip("tyqw is not installed as a script in this environment")
    result = subprocess.run(
        [str(script), "--version"], capture_output=True, text=True, timeout=BOUND, check=False
    )
    assert (result.returncode, result.stdout) == (0, f"tyqw {tyqw.__version__}\n")


def test_main_returns_exit_status_in_process(capsys: pytest.CaptureFixture[str]) -> None:
    """main(argv) returns the status instead of exiting, --help and usage errors included."""
    assert main(["--help"]) == 0
    assert main(["conversations", "clear"]) == 2
    assert capsys.readouterr().err == "tyqw: error: clear needs a NAME or --all (not both)\n"


# -- against an external `tyqw simulate` -----------------------------------------------


@dataclass
class External:
    """A `tyqw simulate --port 0` process and the environment it printed."""

    proc: subprocess.Popen[bytes]
    exports: dict[str, str]

    def env(self, tmp_path: Path, **extra: str) -> dict[str, str]:
        return clean_env(tmp_path, **{**self.exports, **extra})


@pytest.fixture(scope="module")
def external(tmp_path_factory: pytest.TempPathFactory) -> Iterator[External]:
    """One simulator process for the module; stopped with Ctrl-C (SIGINT) at the end."""
    env = clean_env(tmp_path_factory.mktemp("simulate"))
    proc = subprocess.Popen(
        command("simulate", "--port", "0", "--delay", "0"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    assert proc.stdout is not None and proc.stderr is not None
    try:
        out = [""]
        match = read_until(proc.stdout.fileno(), r"export (.*)\n", time.monotonic() + BOUND, out)
        exports = dict(item.split("=", 1) for item in match.group(1).split())
        listening = re.search(r"listening on (\S+)", out[0])
        assert listening and listening.group(1) == exports["DASHSCOPE_BASE_URL"]
        yield External(proc, exports)
    finally:
        if sys.platform == "win32":
            proc.kill()
        else:
            proc.send_signal(signal.SIGINT)  # Ctrl-C stops it
        try:
            _, err = proc.communicate(timeout=BOUND)
        finally:
            if proc.poll() is None:
                proc.kill()
    if sys.platform != "win32":
        assert proc.returncode == 0, err
        assert err.decode() == "tyqw: simulator stopped\n"


def test_simulate_prints_base_url_and_env_line(external: External) -> None:
    """simulate prints where it listens and the env that points the SDK and the CLI at it."""
    assert re.fullmatch(
        r"http://127\.0\.0\.1:\d+/api/v1", external.exports["DASHSCOPE_BASE_URL"]
    ), external.exports
    assert external.exports["DASHSCOPE_API_KEY"] == "sk-simulator"
    assert external.exports["DASHSCOPE_APP_ID"]


def test_ask_continues_a_conversation_across_invocations(
    external: External, tmp_path: Path
) -> None:
    """With `tyqw simulate` running, a second `tyqw ask` continues the first's conversation."""
    env = external.env(tmp_path)
    first = tyqw_run(env, "ask", "你好，我叫小明")
    second = tyqw_run(env, "ask", "我叫什么名字？")
    assert (first.returncode, second.returncode) == (0, 0)
    assert (first.stderr, second.stderr) == ("", "")  # a key is set: no offline notice
    assert second.stdout == "你叫小明。你在前面的对话里告诉过我，我一直记着呢。\n"
    fresh = tyqw_run(env, "ask", "--new", "我叫什么名字？")
    assert fresh.stdout.startswith("你还没告诉我你的名字呢")
    other = tyqw_run(env, "ask", "--name", "other", "我叫什么名字？")
    assert other.stdout.startswith("你还没告诉我你的名字呢")


def test_ask_api_error_exits_1_with_one_line(external: External, tmp_path: Path) -> None:
    """A 401 exits 1 with one stderr line: what, HTTP status, code, request id, what to do."""
    result = tyqw_run(external.env(tmp_path, DASHSCOPE_API_KEY="sk-wrong"), "ask", "hi")
    assert result.returncode == 1
    assert result.stdout == ""
    assert re.fullmatch(
        r"tyqw: error: Invalid API-key provided\. \(HTTP 401, code InvalidApiKey, "
        r"request_id [0-9a-f-]{36}\) — check DASHSCOPE_API_KEY .*\n",
        result.stderr,
    ), result.stderr


def test_ask_bad_app_id_names_the_setting(external: External, tmp_path: Path) -> None:
    """The in-band error for an unknown app id says to check --app-id / DASHSCOPE_APP_ID."""
    result = tyqw_run(external.env(tmp_path), "ask", "--app-id", "x" * 80, "hi")
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1
    assert "HTTP 400, code InvalidParameter" in result.stderr
    assert result.stderr.endswith("— check the app id (--app-id or DASHSCOPE_APP_ID)\n")


def test_chat_error_prints_one_line_and_goes_on(external: External, tmp_path: Path) -> None:
    """In chat, a failed turn prints one error line and the next line is still read."""
    env = external.env(tmp_path, DASHSCOPE_API_KEY="sk-wrong")
    result = tyqw_run(env, "chat", stdin="hello\n/session\nhello again\n")
    assert result.returncode == 0
    errors = result.stderr.splitlines()
    assert len(errors) == 2
    assert all(e.startswith("error: Invalid API-key provided. (HTTP 401") for e in errors)
    assert "session_id: none yet" in result.stdout  # /session ran between the two turns


def test_conversations_list_and_clear(external: External, tmp_path: Path) -> None:
    """conversations list: name, app id, session id, last use; clear forgets by name or all."""
    env = external.env(tmp_path)
    state = tmp_path / "state"
    for name in ("alice", "bob"):
        assert (
            tyqw_run(env, "ask", "--state-dir", str(state), "--name", name, "hi").returncode == 0
        )
    listed = tyqw_run(env, "conversations", "list", "--state-dir", str(state))
    assert listed.returncode == 0
    assert tyqw_run(env, "sessions", "list", "--state-dir", str(state)).stdout == listed.stdout
    header, *rows = listed.stdout.splitlines()
    assert header.split() == ["NAME", "APP", "ID", "SESSION", "ID", "LAST", "USED"]
    assert sorted(row.split()[0] for row in rows) == ["alice", "bob"]
    stored = {c.name: c for c in tyqw.stored_conversations(state)}
    for row in rows:
        name, app_id, session_id, day, clock = row.split()
        assert (app_id, session_id) == (stored[name].app_id, stored[name].session_id)
        assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", f"{day} {clock}")

    cleared = tyqw_run(env, "conversations", "clear", "alice", "--state-dir", str(state))
    assert cleared.returncode == 0
    assert cleared.stderr == "tyqw: forgot 1 conversation named 'alice'\n"
    assert [c.name for c in tyqw.stored_conversations(state)] == ["bob"]
    everything = tyqw_run(env, "sessions", "clear", "--all", "--state-dir", str(state))
    assert everything.stderr == "tyqw: forgot 1 conversation\n"
    empty = tyqw_run(env, "conversations", "list", "--state-dir", str(state))
    assert (empty.returncode, empty.stdout) == (0, "")
    assert empty.stderr == f"tyqw: no stored conversations in {state}\n"


def test_conversations_use_the_default_state_dir(external: External, tmp_path: Path) -> None:
    """Without --state-dir, ask and conversations share the user state folder."""
    env = external.env(tmp_path)
    assert tyqw_run(env, "ask", "hi").returncode == 0
    listed = tyqw_run(env, "conversations", "list")
    assert listed.stdout.splitlines()[1].split()[0] == "default"
    assert list((tmp_path / "xdg-state" / "tyqw").glob("*.json"))


def test_conversations_list_shows_any_name_safely_and_aligned(tmp_path: Path) -> None:
    """Names are listed with control characters escaped, in columns CJK text keeps."""
    for name in ("小明", "bob", "evil\x1b[2J"):  # the last would clear the screen
        tyqw.Session("app-1", api_key="sk-x", name=name, state_dir=tmp_path).session_id = "s1"
    listed = tyqw_run(clean_env(tmp_path), "conversations", "list", "--state-dir", str(tmp_path))
    assert listed.returncode == 0
    assert "\x1b" not in listed.stdout
    rows = listed.stdout.splitlines()
    assert sorted(row.split()[0] for row in rows[1:]) == ["bob", "evil\\x1b[2J", "小明"]
    # Every APP ID cell starts in the same terminal column (a CJK character takes two).
    columns = {
        sum(2 if "\u4e00" <= c <= "\u9fff" else 1 for c in row[: row.index("app-1")])
        for row in rows[1:]
    }
    assert len(columns) == 1 and rows[0].index("APP ID") == columns.pop()


def test_simulate_reports_a_busy_port(tmp_path: Path) -> None:
    """simulate on a port in use exits 1 with one line."""
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = tyqw_run(clean_env(tmp_path), "simulate", "--port", str(port))
    assert result.returncode == 1
    assert re.fullmatch(rf"tyqw: error: cannot listen on 127\.0\.0\.1:{port}: .+\n", result.stderr)


# -- against a simulator in this process ------------------------------------------------


async def test_ask_stream_error_keeps_partial_text(tmp_path: Path) -> None:
    """An error mid-reply: the partial text stays on stdout, one error line, exit 1."""
    async with BailianSimulator() as sim:
        sim.inject(Fault.stream_error(after=2, status=500))
        env = clean_env(
            tmp_path,
            DASHSCOPE_API_KEY=sim.api_key,
            DASHSCOPE_BASE_URL=sim.base_url,
            DASHSCOPE_APP_ID=sim.app_id,
        )
        code, out, err = await tyqw_async(env, "ask", "hello")
    assert code == 1
    assert out == "Hello! I\n"  # two events of four characters, then the line is ended
    assert re.fullmatch(
        r"tyqw: error: An internal error .* \(HTTP 500, code InternalError, request_id \S+\)"
        r" — the service failed; try again later\n",
        err,
    )


async def test_api_key_never_appears_in_output(tmp_path: Path) -> None:
    """The key is in no output of ask, ask --json, chat, sessions, or an error."""
    async with BailianSimulator(api_key=CANARY_KEY) as sim, BailianSimulator() as other:
        env = clean_env(
            tmp_path,
            DASHSCOPE_API_KEY=CANARY_KEY,
            DASHSCOPE_BASE_URL=sim.base_url,
            DASHSCOPE_APP_ID=sim.app_id,
        )
        runs = [
            await tyqw_async(env, "ask", "你好，我叫小明"),
            await tyqw_async(env, "ask", "--json", "我叫什么名字？"),
            await tyqw_async(env, "chat", "--thoughts", stdin="/session\nhello\n/new\n/help\n"),
            await tyqw_async(env, "sessions", "list"),
            await tyqw_async({**env, "DASHSCOPE_BASE_URL": other.base_url}, "ask", "hi"),
            await tyqw_async({**env, "DASHSCOPE_BASE_URL": other.base_url}, "chat", stdin="x\n"),
        ]
    assert [code for code, _, _ in runs] == [0, 0, 0, 0, 1, 0]
    assert "你叫小明" in runs[1][1] and "InvalidApiKey" in runs[4][2]
    assert all(sim.requests[i].headers["authorization"] == f"Bearer {CANARY_KEY}" for i in (0, 1))
    for _, out, err in runs:
        assert CANARY_KEY not in out + err
        assert CANARY_KEY[3:] not in out + err


async def test_chat_thoughts_are_shown_before_the_reply(tmp_path: Path) -> None:
    """chat --thoughts asks for thoughts and prints each once, labelled, before the text."""
    async with BailianSimulator(reasoning=True) as sim:
        env = clean_env(
            tmp_path,
            DASHSCOPE_API_KEY=sim.api_key,
            DASHSCOPE_BASE_URL=sim.base_url,
            DASHSCOPE_APP_ID=sim.app_id,
        )
        code, out, err = await tyqw_async(env, "chat", "--thoughts", stdin="你好\n")
    assert (code, err) == (0, "")
    assert sim.requests[0].body["parameters"]["has_thoughts"] is True
    thought, reply = out.splitlines()
    assert thought == "[思考过程] 用户说「你好」。结合前面0轮对话来回答。"
    assert reply.startswith("你好！我是百炼应用的本地模拟器")


def test_delay_with_a_real_app_says_it_is_unused(external: External, tmp_path: Path) -> None:
    """--delay paces only the offline simulator: with a key, one line says so."""
    result = tyqw_run(external.env(tmp_path), "ask", "--delay", "0.5", "hello")
    assert result.returncode == 0
    assert result.stderr == "tyqw: --delay is for offline mode; your app sets its own pace\n"


# -- signals ----------------------------------------------------------------------------


@POSIX_ONLY
def test_ask_ctrl_c_exits_130_keeping_partial_text(tmp_path: Path) -> None:
    """SIGINT during `ask` stops the reply: partial text and a newline on stdout, exit 130."""
    proc = subprocess.Popen(
        command("ask", "--delay", "0.2", "tell me a long story"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=clean_env(tmp_path),
    )
    assert proc.stdout is not None
    try:
        out = [""]
        read_until(proc.stdout.fileno(), "Turn", time.monotonic() + BOUND, out)
        proc.send_signal(signal.SIGINT)
        rest, err = proc.communicate(timeout=BOUND)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130
    text = out[0] + rest.decode()
    assert text.startswith("Turn") and text.endswith("\n")
    assert "This is where we start." not in text
    assert err.decode() == NO_KEY_NOTICE + "\n"


@POSIX_ONLY
def test_ask_into_a_closed_pipe_exits_quietly(tmp_path: Path) -> None:
    """When the reader of stdout goes away (`| head -c 4`), ask stops quietly with 141."""
    with subprocess.Popen(
        command("ask", "--delay", "0.05", "tell me a long story"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=clean_env(tmp_path),
    ) as proc:
        assert proc.stdout is not None and proc.stderr is not None
        try:
            read_until(proc.stdout.fileno(), "Turn", time.monotonic() + BOUND, [""])
            proc.stdout.close()
            err = proc.stderr.read()
            proc.wait(BOUND)
        finally:
            if proc.poll() is None:
                proc.kill()
    assert proc.returncode == 141
    assert err.decode() == NO_KEY_NOTICE + "\n"
