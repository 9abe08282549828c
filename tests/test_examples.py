"""Every example runs as is, without a key, against the simulator; and run_offline()."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tyqw import Session
from tyqw.testing import run_offline

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
BOUND = 30.0


def run_example(name: str, tmp_path: Path, stdin: str = "") -> str:
    """Run examples/<name> with no DASHSCOPE_* set; return its stdout."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DASHSCOPE_")}
    env["XDG_STATE_HOME"] = str(tmp_path / "xdg-state")
    result = subprocess.run(
        [sys.executable, "-W", "error", str(EXAMPLES / name)],
        input=stdin,
        capture_output=True,
        text=True,
        encoding="utf-8",
        env=env,
        timeout=BOUND,
        check=False,
    )
    assert (result.returncode, result.stderr) == (0, ""), result.stderr
    return result.stdout


def test_every_example_is_tested() -> None:
    """The examples folder holds exactly the examples these tests run."""
    assert sorted(p.name for p in EXAMPLES.glob("*.py")) == [
        "chatbot.py",
        "iterate.py",
        "many_users.py",
        "new_conversation.py",
        "quickstart.py",
        "sync_chat.py",  # run by tests/test_sync.py
    ]


def test_quickstart(tmp_path: Path) -> None:
    """quickstart.py: the second turn remembers the name told in the first."""
    assert run_example("quickstart.py", tmp_path).splitlines() == [
        "很高兴认识你，小明！我记住你的名字了，之后可以问我「我叫什么名字」。",
        "你叫小明。你在前面的对话里告诉过我，我一直记着呢。",
    ]


def test_chatbot(tmp_path: Path) -> None:
    """chatbot.py: lines in, streamed replies out; /new forgets; EOF quits."""
    out = run_example(
        "chatbot.py", tmp_path, stdin="你好，我叫小明\n我叫什么名字？\n/new\n我叫什么名字？\n"
    )
    assert out.split("you> ") == [
        "",
        "bot> 很高兴认识你，小明！我记住你的名字了，之后可以问我「我叫什么名字」。\n",
        "bot> 你叫小明。你在前面的对话里告诉过我，我一直记着呢。\n",
        "(a new conversation)\n",
        "bot> 你还没告诉我你的名字呢。说一句「我叫……」，我就会记住。\n",
        "\n",
    ]


def test_iterate(tmp_path: Path) -> None:
    """iterate.py: two streamed turns of one conversation, with the Reply's details."""
    out = run_example("iterate.py", tmp_path)
    lines = out.splitlines()
    assert lines[0] == "> My name is Ada."
    assert lines[1].startswith("Nice to meet you, Ada!")
    assert lines[3] == "> What's my name?"
    assert lines[4] == "Your name is Ada. You told me earlier in this conversation."
    sessions = re.findall(r"\(stop, \d+ output tokens, session ([0-9a-f]{32})\)", out)
    assert len(sessions) == 2 and sessions[0] == sessions[1]


def test_many_users(tmp_path: Path) -> None:
    """many_users.py: each user's conversation remembers only that user's name."""
    out = run_example("many_users.py", tmp_path)
    assert "bot: Your name is Alice." in out
    assert "bot: Your name is Bob." in out
    assert "bot: 你叫小红。" in out
    stored = sorted(p.name for p in (tmp_path / "xdg-state" / "tyqw").glob("*.json"))
    assert len(stored) == 3


def test_new_conversation(tmp_path: Path) -> None:
    """new_conversation.py: a new Session continues; after clear() the name is forgotten."""
    out = run_example("new_conversation.py", tmp_path)
    sessions = re.findall(r"\(session ([0-9a-f]{32})\)", out)
    assert len(sessions) == 3
    assert sessions[0] == sessions[1] != sessions[2]
    assert "你叫小明。" in out
    assert out.rstrip().splitlines()[-2].startswith("你还没告诉我你的名字呢")


async def test_run_offline_points_the_environment_at_a_simulator(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """run_offline() sets DASHSCOPE_* for main() only, and restores them afterwards."""
    monkeypatch.setenv("DASHSCOPE_API_KEY", "sk-mine")
    monkeypatch.setenv("DASHSCOPE_WORKSPACE", "ws-mine")
    monkeypatch.setenv("DASHSCOPE_HTTP_BASE_URL", "https://example.com/api/v1")

    async def main() -> str:
        assert os.environ["DASHSCOPE_API_KEY"] != "sk-mine"
        assert "DASHSCOPE_WORKSPACE" not in os.environ
        assert "DASHSCOPE_HTTP_BASE_URL" not in os.environ
        async with Session(os.environ["DASHSCOPE_APP_ID"], state_dir=tmp_path) as session:
            await session.send("my name is Ada")
            return (await session.send("what's my name?")).text

    assert await run_offline(main, chunk_size=1) == (
        "Your name is Ada. You told me earlier in this conversation."
    )
    assert os.environ["DASHSCOPE_API_KEY"] == "sk-mine"
    assert os.environ["DASHSCOPE_WORKSPACE"] == "ws-mine"
    assert os.environ["DASHSCOPE_HTTP_BASE_URL"] == "https://example.com/api/v1"
    assert "DASHSCOPE_APP_ID" not in os.environ
    assert "DASHSCOPE_BASE_URL" not in os.environ


async def test_run_offline_restores_the_environment_on_error() -> None:
    """An exception from main() propagates and the environment is restored all the same."""

    async def main() -> None:
        raise LookupError("boom")

    with pytest.raises(LookupError, match="boom"):
        await run_offline(main)
    assert not any(name.startswith("DASHSCOPE_") for name in os.environ)
