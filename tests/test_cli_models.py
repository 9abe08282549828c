"""``tyqw ask --model`` / ``tyqw chat --model``, offline against the simulator, run as a
subprocess: the model answers, thoughts show the reasoning, flags that do not go
together are usage errors."""

from __future__ import annotations

from pathlib import Path

from tyqw.testing import default_reply

from .cli_helpers import NO_KEY_NOTICE, clean_env, tyqw_run


def test_ask_a_model_offline(tmp_path: Path) -> None:
    """No key: the model's reply on stdout, the simulator notice on stderr."""
    result = tyqw_run(clean_env(tmp_path), "ask", "--model", "qwen-plus", "--delay", "0", "hello")
    assert (result.returncode, result.stderr) == (0, NO_KEY_NOTICE + "\n")
    assert result.stdout == default_reply("hello", []) + "\n"


def test_chat_with_a_thinking_model_shows_its_reasoning(tmp_path: Path) -> None:
    """--thoughts: the reasoning on its own line before the answer."""
    result = tyqw_run(
        clean_env(tmp_path),
        "chat",
        "--model",
        "qwen-plus",
        "--system",
        "Be brief.",
        "--thoughts",
        "--delay",
        "0",
        stdin="hello\n",
    )
    assert result.returncode == 0, result.stderr
    reasoning, answer = result.stdout.strip().split("\n")[-2:]
    assert reasoning.startswith('[reasoning] The user said "hello".')
    assert answer.endswith(default_reply("hello", []))


def test_model_flags_that_do_not_go_together(tmp_path: Path) -> None:
    """--app-id with --model, and --system without it: usage errors (exit 2)."""
    both = tyqw_run(clean_env(tmp_path), "ask", "--app-id", "a", "--model", "qwen-plus", "hi")
    alone = tyqw_run(clean_env(tmp_path), "ask", "--system", "x", "hi")
    assert (both.returncode, alone.returncode) == (2, 2)
    assert "--app-id or --model, not both" in both.stderr
    assert "--system is for --model" in alone.stderr
