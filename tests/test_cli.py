"""The ``tyqw`` command, run as a subprocess against the simulator.

Three ways to reach a simulator: ``--offline`` / no key (in-process in the child), an
external ``tyqw simulate --port 0`` process, and a ``BailianSimulator`` in the test's own
event loop (for fault injection). The REPL runs in a real pseudo-terminal. Every wait
has a deadline; nothing sleeps to wait for output.
"""

from __future__ import annotations

import asyncio
import codecs
import json
import os
import re
import select
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest

import tyqw
from tyqw._cli import main
from tyqw.testing import BailianSimulator, Fault

BOUND = 15.0  # seconds: generous for a slow CI machine, never reached when things work
NO_KEY_NOTICE = (
    "tyqw: no DASHSCOPE_API_KEY set, so using the built-in offline simulator (canned "
    "replies). Set DASHSCOPE_API_KEY and DASHSCOPE_APP_ID to talk to your Bailian app."
)
OFFLINE_NOTICE = (
    "tyqw: --offline: using the built-in offline simulator (canned replies); "
    "your key and app are not used."
)
CANARY_KEY = "sk-canary-4f9d2b7e1a6c"
POSIX_ONLY = pytest.mark.skipif(sys.platform == "win32", reason="needs POSIX signals and ptys")


def clean_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """The environment of a child: no DASHSCOPE_* of the developer, state under tmp."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DASHSCOPE_")}
    env["XDG_STATE_HOME"] = str(tmp_path / "xdg-state")
    env.pop("PYTHONWARNINGS", None)
    env.update(extra)
    return env


def command(*args: str) -> list[str]:
    # -W error: a leaked socket or session would print a ResourceWarning to stderr, and
    # every test asserts stderr.
    return [sys.executable, "-W", "error", "-m", "tyqw", *args]


def tyqw_run(
    env: Mapping[str, str], *args: str, stdin: str = ""
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        command(*args),
        input=stdin,
        capture_output=True,
        text=True,
        encoding="utf-8",
        env=dict(env),
        timeout=BOUND,
        check=False,
    )


async def tyqw_async(env: Mapping[str, str], *args: str, stdin: str = "") -> tuple[int, str, str]:
    """Run tyqw while this test's own event loop keeps serving a simulator."""
    proc = await asyncio.create_subprocess_exec(
        *command(*args),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=dict(env),
    )
    out, err = await asyncio.wait_for(proc.communicate(stdin.encode()), BOUND)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def read_until(fd: int, pattern: str, deadline: float, buffer: list[str]) -> re.Match[str]:
    """Read ``fd`` into ``buffer[0]`` until ``pattern`` matches; fail at ``deadline``."""
    decoder = codecs.getincrementaldecoder("utf-8")("replace")
    while True:
        match = re.search(pattern, buffer[0])
        if match:
            return match
        left = deadline - time.monotonic()
        ready, _, _ = select.select([fd], [], [], max(left, 0))
        if not ready:
            pytest.fail(f"no {pattern!r} within the deadline; got {buffer[0]!r}")
        try:
            data = os.read(fd, 65536)
        except OSError:  # a pty reports EIO once the child is gone
            data = b""
        if not data:
            pytest.fail(f"output ended before {pattern!r}; got {buffer[0]!r}")
        buffer[0] += decoder.decode(data).replace("\r\n", "\n")


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


@pytest.mark.parametrize(
    ("args", "env", "stderr"),
    [
        ([], {}, r"required: COMMAND"),
        (["ask"], {}, r"required: PROMPT"),
        (["ask", "  "], {}, r"\Atyqw: error: the prompt is empty\n\Z"),
        (
            ["ask", "hi"],
            {"DASHSCOPE_API_KEY": "sk-x"},
            r"\Atyqw: error: no app id: pass --app-id or set DASHSCOPE_APP_ID .*\n\Z",
        ),
        (
            ["ask", "--app-id", "a/b", "hi"],
            {"DASHSCOPE_API_KEY": "sk-x"},
            r"\Atyqw: error: invalid app_id 'a/b'.*\n\Z",
        ),
        (
            ["ask", "--app-id", "app", "hi"],
            {"DASHSCOPE_API_KEY": "sk-x", "DASHSCOPE_BASE_URL": "http://example.com/api/v1"},
            r"\Atyqw: error: refusing to send the API key over plain http.*\n\Z",
        ),
        (["sessions"], {}, r"required: ACTION"),
        (["sessions", "clear"], {}, r"\Atyqw: error: sessions clear needs a NAME or --all"),
        (["sessions", "clear", "x", "--all"], {}, r"needs a NAME or --all \(not both\)"),
        (["chat", "--delay", "soon"], {}, r"not a number of seconds"),
    ],
    ids=[
        "no-command",
        "no-prompt",
        "empty-prompt",
        "key-without-app-id",
        "bad-app-id",
        "plain-http-to-remote-host",
        "sessions-no-action",
        "clear-nothing",
        "clear-both",
        "bad-delay",
    ],
)
def test_usage_errors_exit_2(
    tmp_path: Path, args: list[str], env: dict[str, str], stderr: str
) -> None:
    """Usage and configuration mistakes exit 2 with the reason on stderr, nothing on stdout."""
    result = tyqw_run(clean_env(tmp_path, **env), *args)
    assert result.returncode == 2
    assert result.stdout == ""
    assert re.search(stderr, result.stderr), result.stderr


def test_version_and_help(tmp_path: Path) -> None:
    """--version prints the version; --help exits 0 and lists the commands."""
    version = tyqw_run(clean_env(tmp_path), "--version")
    assert (version.returncode, version.stdout) == (0, f"tyqw {tyqw.__version__}\n")
    help_ = tyqw_run(clean_env(tmp_path), "--help")
    assert help_.returncode == 0
    assert all(name in help_.stdout for name in ("chat", "ask", "sessions", "simulate"))


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
    assert main(["sessions", "clear"]) == 2
    assert "needs a NAME or --all" in capsys.readouterr().err


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


def test_sessions_list_and_clear(external: External, tmp_path: Path) -> None:
    """sessions list shows name, app id, session id, last use; clear forgets by name or all."""
    env = external.env(tmp_path)
    state = tmp_path / "state"
    for name in ("alice", "bob"):
        assert (
            tyqw_run(env, "ask", "--state-dir", str(state), "--name", name, "hi").returncode == 0
        )
    listed = tyqw_run(env, "sessions", "list", "--state-dir", str(state))
    assert listed.returncode == 0
    header, *rows = listed.stdout.splitlines()
    assert header.split() == ["NAME", "APP", "ID", "SESSION", "ID", "LAST", "USED"]
    assert sorted(row.split()[0] for row in rows) == ["alice", "bob"]
    stored = {c.name: c for c in tyqw.stored_conversations(state)}
    for row in rows:
        name, app_id, session_id, day, clock = row.split()
        assert (app_id, session_id) == (stored[name].app_id, stored[name].session_id)
        assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", f"{day} {clock}")

    cleared = tyqw_run(env, "sessions", "clear", "alice", "--state-dir", str(state))
    assert cleared.returncode == 0
    assert cleared.stderr == "tyqw: forgot 1 conversation named 'alice'\n"
    assert [c.name for c in tyqw.stored_conversations(state)] == ["bob"]
    everything = tyqw_run(env, "sessions", "clear", "--all", "--state-dir", str(state))
    assert everything.stderr == "tyqw: forgot 1 conversation\n"
    empty = tyqw_run(env, "sessions", "list", "--state-dir", str(state))
    assert (empty.returncode, empty.stdout) == (0, "")
    assert empty.stderr == f"tyqw: no stored conversations in {state}\n"


def test_sessions_use_the_default_state_dir(tmp_path: Path) -> None:
    """Without --state-dir, ask and sessions share the user state folder (XDG_STATE_HOME)."""
    env = clean_env(tmp_path)
    assert tyqw_run(env, "ask", "--delay", "0", "hi").returncode == 0
    listed = tyqw_run(env, "sessions", "list")
    assert listed.stdout.splitlines()[1].split()[0] == "default"
    assert list((tmp_path / "xdg-state" / "tyqw").glob("*.json"))


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


# -- the REPL in a pseudo-terminal ------------------------------------------------------

# The child makes the pty its controlling terminal, so typing Ctrl-C sends it SIGINT.
_ATTACH = (
    "import fcntl, os, sys, termios; fcntl.ioctl(0, termios.TIOCSCTTY, 0); "
    "os.execv(sys.executable, [sys.executable, *sys.argv[1:]])"
)


class Terminal:
    """A child on a pseudo-terminal: type keys, wait for text with a deadline."""

    def __init__(self, args: list[str], env: Mapping[str, str]) -> None:
        import fcntl
        import struct
        import termios

        self.fd, child = os.openpty()
        fcntl.ioctl(self.fd, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 160, 0, 0))
        self.proc = subprocess.Popen(
            [sys.executable, "-c", _ATTACH, *command(*args)[1:]],
            stdin=child,
            stdout=child,
            stderr=child,
            start_new_session=True,
            env={**env, "TERM": "dumb"},
        )
        os.close(child)
        self.seen = [""]
        self.transcript = ""

    def expect(self, pattern: str) -> re.Match[str]:
        """Wait for ``pattern``; what came before it and the match are consumed."""
        match = read_until(self.fd, pattern, time.monotonic() + BOUND, self.seen)
        self.transcript += self.seen[0][: match.end()]
        self.seen[0] = self.seen[0][match.end() :]
        return match

    def type(self, keys: str) -> None:
        os.write(self.fd, keys.encode())

    def wait(self) -> int:
        """Read what is left until the child closes the terminal, then its exit status."""
        deadline = time.monotonic() + BOUND
        while select.select([self.fd], [], [], max(deadline - time.monotonic(), 0))[0]:
            try:
                data = os.read(self.fd, 65536)
            except OSError:  # EIO: every process has closed the terminal
                break
            if not data:
                break
            self.seen[0] += data.decode("utf-8", "replace").replace("\r\n", "\n")
        return self.proc.wait(BOUND)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(BOUND)
        os.close(self.fd)


@pytest.fixture
def terminal(tmp_path: Path) -> Iterator[type[Terminal]]:
    """Open Terminals are killed and closed at the end of the test."""
    opened: list[Terminal] = []

    class Opened(Terminal):
        def __init__(self, args: list[str], env: Mapping[str, str]) -> None:
            super().__init__(args, env)
            opened.append(self)

    yield Opened
    for term in opened:
        term.close()


def reply_to(term: Terminal, text: str) -> str:
    """Type a line at the prompt; the output it caused, without the echo and next prompt."""
    term.type(text + "\r")
    term.expect(re.escape(text) + r"\n")
    match = term.expect(r"\n> ")
    return match.string[: match.start()]


@POSIX_ONLY
def test_chat_streams_remembers_and_new_starts_over(
    tmp_path: Path, terminal: type[Terminal]
) -> None:
    """In a terminal: replies stream, context carries over, /new and /session, Ctrl-D is 0."""
    term = terminal(["chat", "--delay", "0.01"], clean_env(tmp_path))
    term.expect(re.escape(NO_KEY_NOTICE) + r"\n")
    term.expect(r"Type a message; /help lists commands, Ctrl-D quits\.\n> ")
    assert reply_to(term, "你好，我叫小明").startswith("很高兴认识你，小明！")
    assert reply_to(term, "我叫什么名字？") == "你叫小明。你在前面的对话里告诉过我，我一直记着呢。"
    first = re.search(r"session_id: ([0-9a-f]{32})\n", reply_to(term, "/session"))
    assert first

    assert reply_to(term, "/new") == "(new conversation: the app has forgotten the context)"
    session = reply_to(term, "/session")
    assert "session_id: none yet" in session
    assert "stored in: " + str(tmp_path / "xdg-state" / "tyqw") in session
    assert reply_to(term, "我叫什么名字？").startswith("你还没告诉我你的名字呢")
    second = re.search(r"session_id: ([0-9a-f]{32})\n", reply_to(term, "/session"))
    assert second and second.group(1) != first.group(1)

    assert "/new " in reply_to(term, "/help")
    assert "unknown command /nope" in reply_to(term, "/nope")
    term.type("\x04")  # Ctrl-D
    assert term.wait() == 0


@POSIX_ONLY
def test_chat_ctrl_c_stops_the_reply_and_the_repl_goes_on(
    tmp_path: Path, terminal: type[Terminal]
) -> None:
    """Ctrl-C mid-reply keeps the partial text, prints [stopped], and the next turn works."""
    term = terminal(["chat", "--delay", "0.1"], clean_env(tmp_path))
    term.expect(r"\n> ")
    # A long prompt, echoed back at 0.1 s per 4 characters: the reply takes seconds, so
    # the Ctrl-C below lands mid-reply even when a loaded machine delays this test.
    prompt = "tell me a story about the West Lake, the Leifeng Pagoda and the Longjing tea hills"
    term.type(prompt + "\r")
    term.expect(re.escape(prompt) + r"\n")
    term.expect(r"Turn")  # the first piece of the reply is on screen
    term.type("\x03")  # Ctrl-C
    stopped = term.expect(r"\[stopped\]\n> ")
    assert "This is where we start." not in stopped.string[: stopped.start()]
    assert reply_to(term, "and then?").startswith('Turn 1: you said "and then?"')
    term.type("\x03")  # Ctrl-C at the prompt quits cleanly
    assert term.wait() == 0
    assert "Traceback" not in term.transcript + term.seen[0]
