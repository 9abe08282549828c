"""What was said, from the command line: ``tyqw chat`` showing a resumed conversation and
``/history``, ``tyqw conversations show|export|delete``. Run as subprocesses against a
``tyqw simulate`` process (an offline chat keeps nothing), over a state folder of the
test's own.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from tyqw import Exchange

from .cli_helpers import POSIX_ONLY, Terminal, clean_env, command, tyqw_run
from .simulate_process import Simulate, simulate

DIM, PLAIN = "\x1b[2m", "\x1b[0m"
PROMPT = r"\n(?:\x1b\[\?2004h)?> "  # an xterm gets bracketed paste switched on


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Simulate]:
    """One ``tyqw simulate`` for the module: the app every command here talks to."""
    with simulate(tmp_path_factory.mktemp("simulate")) as running:
        yield running


@pytest.fixture
def env(service: Simulate, tmp_path: Path) -> dict[str, str]:
    return clean_env(tmp_path, **service.exports)


def chat_lines(env: dict[str, str], tmp_path: Path, name: str, *lines: str) -> str:
    """``tyqw chat`` fed ``lines`` through a pipe; its stdout."""
    state = str(tmp_path / "state")
    result = tyqw_run(
        env,
        "chat",
        "--state-dir",
        state,
        "--name",
        name,
        stdin="".join(f"{line}\n" for line in lines),
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def conversations(env: dict[str, str], tmp_path: Path, *args: str) -> tuple[int, str, str]:
    result = tyqw_run(env, "conversations", *args, "--state-dir", str(tmp_path / "state"))
    return result.returncode, result.stdout, result.stderr


def test_show_prints_the_transcript_oldest_first(env: dict[str, str], tmp_path: Path) -> None:
    """conversations show NAME: each exchange's time, prompt and reply, in order."""
    chat_lines(env, tmp_path, "alice", "你好，我叫小明", "我叫什么名字？")
    code, out, err = conversations(env, tmp_path, "show", "alice")
    assert (code, err) == (0, "")
    blocks = out.split("\n\n")
    assert re.fullmatch(
        r"\[\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\]\nyou: 你好，我叫小明\napp: 很高兴认识你，小明！.*",
        blocks[0],
    )
    assert "you: 我叫什么名字？\napp: 你叫小明。" in blocks[1]
    code, _, err = conversations(env, tmp_path, "show", "nobody")
    assert (code, err) == (1, "tyqw: error: no stored conversation named 'nobody'\n")


def test_export_jsonl_reads_back_as_exchanges(env: dict[str, str], tmp_path: Path) -> None:
    """export --format jsonl: one Exchange.to_dict() per line, to stdout."""
    chat_lines(env, tmp_path, "alice", "my name is Ada", "what's my name?")
    code, out, err = conversations(env, tmp_path, "export", "alice", "--format", "jsonl")
    assert (code, err) == (0, "")
    exchanges = [Exchange.from_dict(json.loads(line)) for line in out.splitlines()]
    assert [e.prompt for e in exchanges] == ["my name is Ada", "what's my name?"]
    assert exchanges[1].reply.text.startswith("Your name is Ada")
    assert conversations(env, tmp_path, "export", "alice")[1] == out  # jsonl is the default


def test_export_markdown_is_a_document(env: dict[str, str], tmp_path: Path) -> None:
    """export --format markdown: a title, then a section per exchange."""
    chat_lines(env, tmp_path, "alice", "my name is Ada", "what's my name?")
    code, out, err = conversations(env, tmp_path, "export", "alice", "--format", "markdown")
    assert (code, err) == (0, "")
    assert out.startswith("# Conversation alice\n\nApp `")
    assert out.count("\n## ") == 2
    assert "**You:** my name is Ada\n\n**App:** Nice to meet you, Ada!" in out
    assert "**You:** what's my name?\n\n**App:** Your name is Ada." in out


def test_delete_removes_the_conversation_and_everything_said(
    env: dict[str, str], tmp_path: Path
) -> None:
    """conversations delete NAME: the record and the transcript go; others stay."""
    chat_lines(env, tmp_path, "alice", "my name is Ada")
    chat_lines(env, tmp_path, "bob", "my name is Bo")
    state = tmp_path / "state"
    assert len(list(state.glob("*.transcript.jsonl"))) == 2
    code, _, err = conversations(env, tmp_path, "delete", "alice")
    assert code == 0
    assert err == "tyqw: deleted 1 conversation named 'alice', with everything said in them\n"
    assert "Ada" not in "".join(p.read_text() for p in state.iterdir() if p.is_file())
    assert conversations(env, tmp_path, "show", "alice")[0] == 1
    assert "you: my name is Bo" in conversations(env, tmp_path, "show", "bob")[1]
    code, _, err = conversations(env, tmp_path, "delete", "alice")
    assert (code, err) == (1, "tyqw: error: no stored conversation named 'alice'\n")


def test_clear_forgets_the_transcript_too(env: dict[str, str], tmp_path: Path) -> None:
    """conversations clear NAME ends the transcript with the conversation, as clear() does."""
    chat_lines(env, tmp_path, "alice", "my name is Ada")
    assert conversations(env, tmp_path, "clear", "alice")[0] == 0
    assert not list((tmp_path / "state").glob("*.transcript.jsonl"))


def test_history_command_prints_the_transcript(env: dict[str, str], tmp_path: Path) -> None:
    """/history in a chat prints what was said so far, this run's and earlier runs'."""
    chat_lines(env, tmp_path, "alice", "my name is Ada")
    out = chat_lines(env, tmp_path, "alice", "hello", "/history")
    history = out.split("\n", 1)[1]  # after the reply to "hello"
    assert re.search(r"you: my name is Ada\napp: Nice to meet you, Ada!.*\n\n\[", history)
    assert "you: hello\napp: Hello, Ada!" in history
    assert DIM not in out  # a pipe gets no terminal codes


@POSIX_ONLY
def test_a_resumed_chat_shows_the_last_exchanges_dimmed(
    env: dict[str, str], tmp_path: Path
) -> None:
    """In a terminal, a resumed conversation shows its last three exchanges, dimmed,
    before the prompt; --new shows none."""
    chat_lines(env, tmp_path, "alice", "one", "my name is Ada", "three", "four")
    argv = command("chat", "--state-dir", str(tmp_path / "state"), "--name")
    with Terminal([*argv, "alice"], env, term="xterm") as term:
        recap = term.expect(PROMPT).string
        term.type("\x04")
        assert term.wait() == 0
    assert f"{DIM}(resuming this conversation; 1 earlier; /history shows it all){PLAIN}" in recap
    assert f"{DIM}you: my name is Ada{PLAIN}\n{DIM}app: Nice to meet you, Ada!" in recap
    assert f"{DIM}you: four{PLAIN}" in recap
    assert "you: one" not in recap
    with Terminal([*argv, "alice", "--new"], env, term="xterm") as term:
        fresh = term.expect(PROMPT).string
        term.type("\x04")
        assert term.wait() == 0
    assert "resuming" not in fresh
