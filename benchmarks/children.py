"""The child processes a benchmark runs: the fast Bailian server (``server.py``) and a
benchmark script's own roles (``--role upstream``, ``--role relay``). Each child prints
one JSON line with its port, and exits when its stdin closes, so a parent that dies
takes its children with it.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def start_server() -> tuple[subprocess.Popen[str], str]:
    """Start ``server.py`` on a free port; return it and its ``/api/v1`` base URL."""
    server, port = start_script(HERE / "server.py", "--port", "0", "--watch-stdin")
    return server, f"http://127.0.0.1:{port}/api/v1"


def start_role(script: str | Path, role: str, *args: str) -> tuple[subprocess.Popen[str], int]:
    """Start ``script --role role *args``; return it and the port it reports."""
    return start_script(script, "--role", role, *args)


def start_script(script: str | Path, *args: str) -> tuple[subprocess.Popen[str], int]:
    process = subprocess.Popen(
        [sys.executable, str(script), *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    line = process.stdout.readline()
    if not line:
        raise SystemExit(f"{Path(script).name} {' '.join(args)} did not start")
    return process, int(json.loads(line)["port"])


def stop(*processes: subprocess.Popen[str], timeout: float = 30) -> None:
    """Close each child's stdin (it exits then); kill one that outlives ``timeout``."""
    for process in processes:
        assert process.stdin is not None and process.stdout is not None
        process.stdin.close()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        process.stdout.close()
