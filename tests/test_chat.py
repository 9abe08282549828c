"""``tyqw chat`` as people use it: in a real pseudo-terminal, and fed by a pipe.

Typing Ctrl-C in the terminal sends the child a real SIGINT; a paste is what a terminal in
bracketed-paste mode sends. Replies come from the offline simulator, which echoes each
prompt and numbers the turns, so a reply shows exactly what was sent and how many
requests were made.
"""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from .cli_helpers import (
    BOUND,
    NO_KEY_NOTICE,
    POSIX_ONLY,
    Terminal,
    clean_env,
    command,
    read_until,
    run,
    tyqw_run,
)

BANNER = "Type a message; /help lists commands. Ctrl-C stops a reply, Ctrl-D or /exit quits."
PASTE_MODE_ON, PASTE_MODE_OFF = "\x1b[?2004h", "\x1b[?2004l"
# Long enough that at 0.1 s per 4 characters the reply streams for seconds, so a Ctrl-C
# lands mid-reply even when a loaded machine delays the test.
STORY = "tell me a story about the West Lake, the Leifeng Pagoda and the Longjing tea hills"

pytestmark = POSIX_ONLY


def chat(tmp_path: Path, *flags: str, term: str = "dumb", **env: str) -> Terminal:
    return Terminal(command("chat", *flags), clean_env(tmp_path, **env), term=term)


def reply_to(term: Terminal, text: str) -> str:
    """Type a line at the prompt; the output it caused, without the echo and next prompt."""
    term.type(text + "\r")
    term.expect(re.escape(text) + r"\n")
    match = term.expect(r"\n> ")
    return match.string[: match.start()]


def test_chat_streams_remembers_and_new_starts_over(tmp_path: Path) -> None:
    """In a terminal: replies stream, context carries over, /new and /session, Ctrl-D is 0."""
    with chat(tmp_path, "--delay", "0.01") as term:
        term.expect(re.escape(NO_KEY_NOTICE) + r"\n")
        term.expect(re.escape(BANNER) + r"\n> ")
        assert reply_to(term, "你好，我叫小明").startswith("很高兴认识你，小明！")
        assert (
            reply_to(term, "我叫什么名字？")
            == "你叫小明。你在前面的对话里告诉过我，我一直记着呢。"
        )
        first = re.search(r"session_id: ([0-9a-f]{32})\n", reply_to(term, "/session"))
        assert first

        assert reply_to(term, "/new") == "(new conversation: the app has forgotten the context)"
        session = reply_to(term, "/session")
        assert "session_id: none yet" in session
        assert "stored in: memory, for this run only\n" in session  # offline: never on disk
        assert reply_to(term, "我叫什么名字？").startswith("你还没告诉我你的名字呢")
        second = re.search(r"session_id: ([0-9a-f]{32})\n", reply_to(term, "/session"))
        assert second and second.group(1) != first.group(1)

        assert "unknown command /nope" in reply_to(term, "/nope")
        term.type("\x04")  # Ctrl-D
        assert term.wait() == 0
        assert "\x1b[" not in term.transcript  # a dumb terminal gets no mode switches


def test_chat_help_tells_how_to_write_several_lines_and_quit(tmp_path: Path) -> None:
    """/help names the commands, the backslash, pasting, Ctrl-C and how to quit."""
    with chat(tmp_path, "--delay", "0") as term:
        term.expect(r"\n> ")
        shown = reply_to(term, "/help")
        term.type("/exit\r")
        assert term.wait() == 0
    for words in ("/new", "/session", "/exit", "Ctrl-D", "ending in \\ continues", "pasted"):
        assert words in shown, words
    assert "Ctrl-C during a reply stops it" in shown
    assert "while typing, it clears the line" in shown


def test_chat_ctrl_c_stops_the_reply_and_a_second_does_not_quit(tmp_path: Path) -> None:
    """Ctrl-C mid-reply keeps the text and prints [stopped]; Ctrl-C again is a new prompt."""
    with chat(tmp_path, "--delay", "0.1") as term:
        term.expect(r"\n> ")
        term.type(STORY + "\r")
        term.expect(re.escape(STORY) + r"\n")
        term.expect(r"Turn")  # the first piece of the reply is on screen
        term.type("\x03")  # Ctrl-C
        stopped = term.expect(r"\[stopped\]\n> ")
        assert "This is where we start." not in stopped.string[: stopped.start()]
        term.idle()
        term.type("\x03")  # and again, a moment later
        term.expect(r"\^C\n> ")
        assert reply_to(term, "and then?").startswith('Turn 1: you said "and then?"')
        term.type("/exit\r")
        assert term.wait() == 0
    assert "Traceback" not in term.transcript


def test_chat_ctrl_c_twice_at_once_during_a_reply_keeps_the_chat(tmp_path: Path) -> None:
    """Two Ctrl-C in one keystroke burst mid-reply stop it; the chat still answers."""
    with chat(tmp_path, "--delay", "0.1") as term:
        term.expect(r"\n> ")
        term.type(STORY + "\r")
        term.expect(r"Turn")
        term.type("\x03\x03")
        term.expect(r"\[stopped\]\n")
        # The second press landed either in the same reply or at the new prompt.
        term.type("and then?\r")
        term.expect(r'Turn 1: you said "and then\?"')
        term.expect(r"\n> ")
        term.type("\x04")
        assert term.wait() == 0
    assert "Traceback" not in term.transcript


def test_chat_ctrl_c_at_the_prompt_drops_the_line(tmp_path: Path) -> None:
    """Ctrl-C on a half-typed line clears it and shows a fresh prompt; nothing is sent."""
    with chat(tmp_path, "--delay", "0") as term:
        term.expect(r"\n> ")
        term.type("half a line")
        term.expect("half a line")
        term.idle()
        term.type("\x03")
        term.expect(r"\^C\n> ")
        assert reply_to(term, "first") == 'Turn 1: you said "first". This is where we start.'
        term.type("\x04")
        assert term.wait() == 0


@pytest.mark.parametrize("readline", ["readline", "no-readline"])
def test_chat_a_paste_is_one_prompt(tmp_path: Path, readline: str) -> None:
    """Pasted lines (bracketed paste) are one prompt, sent by Enter: one request, not three."""
    env = {}
    if readline == "no-readline":  # a Python built without readline: the markers reach tyqw
        (tmp_path / "lib").mkdir()
        (tmp_path / "lib" / "readline.py").write_text("raise ImportError('no readline')\n")
        env["PYTHONPATH"] = str(tmp_path / "lib")
    with chat(tmp_path, "--delay", "0", term="xterm", **env) as term:
        term.expect(re.escape(PASTE_MODE_ON + "> "))
        term.type("\x1b[200~line one\rline two\rline three\x1b[201~")
        term.expect("line three")
        term.type("\r")
        term.expect(re.escape(PASTE_MODE_OFF))  # off before the reply: no paste mode there
        term.expect('Turn 1: you said "line one\nline two\nline three". This is where we')
        term.expect(re.escape(PASTE_MODE_ON + "> "))
        term.type("and then?\r")
        term.expect(r'Turn 2: you said "and then\?"')
        term.expect(re.escape(PASTE_MODE_ON + "> "))
        term.type("\x04")
        assert term.wait() == 0


def test_chat_a_backslash_continues_the_line(tmp_path: Path) -> None:
    """A line ending in a backslash continues on a '... ' line; Enter then sends both."""
    with chat(tmp_path, "--delay", "0") as term:
        term.expect(r"\n> ")
        term.type("first \\\r")
        term.expect(r"\n\.\.\. ")
        term.type("second\r")
        term.expect('Turn 1: you said "first \nsecond". This is where we start.\n> ')
        term.type("\x04")
        assert term.wait() == 0


def test_piped_chat_joins_backslash_lines(tmp_path: Path) -> None:
    """From a pipe, each line is a prompt, and a backslash joins a line to the next."""
    result = tyqw_run(clean_env(tmp_path), "chat", "--delay", "0", stdin="one \\\ntwo\nthree\n")
    assert (result.returncode, result.stderr) == (0, NO_KEY_NOTICE + "\n")
    assert result.stdout.splitlines() == [
        'Turn 1: you said "one ',
        'two". This is where we start.',
        'Turn 2: you said "three". Before that you said "one ',
        'two".',
    ]


def test_piped_chat_refuses_an_undecodable_line_and_goes_on(tmp_path: Path) -> None:
    """A line that is not UTF-8 is one error line, nothing is sent, and the next is read."""
    result = tyqw_run(clean_env(tmp_path), "chat", "--delay", "0", stdin=b"caf\xe9\nhello\n")
    assert result.returncode == 0
    assert result.stderr == (
        NO_KEY_NOTICE + "\nerror: the prompt is not valid UTF-8 text at character 4 "
        "(byte 0xe9); nothing was sent\n"
    )
    assert result.stdout.startswith("Hello! I'm the local Bailian simulator")


# Ctrl-C pressed at the very moment a store starts closing: the store and method named.
CTRL_C_AT_CLOSE = """
import os, signal, sys
from tyqw import stores
from tyqw._cli import main
store = getattr(stores, sys.argv[1])
closing = store.aclose
def aclose(self):
    coro = closing(self)
    os.kill(os.getpid(), signal.SIGINT)
    return coro
store.aclose = aclose
sys.exit(main(sys.argv[2:]))
"""


@pytest.mark.parametrize(
    ("store", "stdin", "replied"),
    [
        ("FileStore", b"hello\n", False),  # the named store, closed as offline mode opens
        ("MemoryStore", b"hello\n", True),  # the offline run's store, closed at the end
    ],
)
def test_ctrl_c_while_a_store_closes_lets_it_close_then_ends_with_130(
    tmp_path: Path, store: str, stdin: bytes, replied: bool
) -> None:
    """Opening and closing are never cut halfway: Ctrl-C waits for them, then ends it."""
    argv = [sys.executable, "-W", "error", "-c", CTRL_C_AT_CLOSE, store, "chat", "--delay", "0"]
    result = run(argv, clean_env(tmp_path), stdin=stdin)
    assert (result.returncode, result.stderr) == (130, NO_KEY_NOTICE + "\n\n")
    assert result.stdout.startswith("Hello! I'm the local Bailian simulator") == replied


def test_piped_chat_ctrl_c_ends_it_with_130(tmp_path: Path) -> None:
    """With stdin a pipe there is no line to clear: Ctrl-C ends the chat quietly, 130."""
    proc = subprocess.Popen(
        command("chat"),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=clean_env(tmp_path),
    )
    assert proc.stderr is not None
    try:
        err = [""]
        read_until(
            proc.stderr.fileno(), re.escape(NO_KEY_NOTICE + "\n"), time.monotonic() + BOUND, err
        )
        proc.send_signal(signal.SIGINT)
        out, rest = proc.communicate(timeout=BOUND)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130
    assert (out, err[0] + rest.decode()) == (b"", NO_KEY_NOTICE + "\n\n")
