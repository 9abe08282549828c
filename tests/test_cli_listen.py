"""The two commands that listen, ``tyqw simulate`` and ``tyqw serve``, read their numbers
alike: a bad ``--port`` or ``--delay`` is one line and exit status 2, a port already in
use says how to pick another, and their default ports differ so both run side by side."""

from __future__ import annotations

import re
import socket
from pathlib import Path

import pytest

from .cli_helpers import clean_env, tyqw_run

LISTENING = ["simulate", "serve"]


@pytest.mark.parametrize("command", LISTENING)
@pytest.mark.parametrize("value", ["99999", "65536", "-5", "http", ""])
def test_a_bad_port_is_one_line_and_exit_2(command: str, value: str, tmp_path: Path) -> None:
    """--port outside 0-65535 (or not a number) is refused in one line, no traceback."""
    result = tyqw_run(clean_env(tmp_path), command, "--port", value)
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr == (
        f"tyqw: error: argument --port: must be 0 to 65535, not {value!r} "
        f"— see tyqw {command} --help\n"
    )


@pytest.mark.parametrize("command", [*LISTENING, "ask"])
@pytest.mark.parametrize("value", ["-1", "nan", "61", "soon"])
def test_a_bad_delay_is_one_line_and_exit_2(command: str, value: str, tmp_path: Path) -> None:
    """--delay below 0, above 60 or not a number is refused alike by every command."""
    args = ["--delay", value] + (["hi"] if command == "ask" else [])
    result = tyqw_run(clean_env(tmp_path), command, *args)
    assert (result.returncode, result.stdout) == (2, "")
    assert re.fullmatch(
        rf"tyqw: error: argument --delay: .+ — see tyqw {command} --help\n", result.stderr
    )


@pytest.mark.parametrize("command", LISTENING)
def test_a_busy_port_says_how_to_pick_another(command: str, tmp_path: Path) -> None:
    """A port in use is exit 1 and one line that names --port and --port 0."""
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = tyqw_run(clean_env(tmp_path), command, "--port", str(port), "--delay", "0")
    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("tyqw: error")]
    assert errors == [
        f"tyqw: error: cannot listen on 127.0.0.1:{port}: Address already in use (another "
        "program, perhaps another tyqw simulate or serve, is using that port: pass --port "
        "with another number, or --port 0 for any free port)"
    ]


def test_simulate_and_serve_default_to_different_ports(tmp_path: Path) -> None:
    """The README runs `tyqw simulate` and `tyqw serve` side by side: their defaults differ."""
    defaults = {}
    for command in LISTENING:
        result = tyqw_run(clean_env(tmp_path), command, "--help")
        found = re.search(r"--port PORT\s+default: (\d+)", result.stdout)
        assert result.returncode == 0 and found, result.stdout
        defaults[command] = found.group(1)
    assert defaults == {"simulate": "8100", "serve": "8000"}
