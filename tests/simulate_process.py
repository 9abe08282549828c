"""``tyqw simulate`` as a child process, for the tests that talk to it from outside."""

from __future__ import annotations

import os
import re
import select
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

BOUND = 15.0  # seconds: generous for a slow CI machine, never reached when things work


def child_env(state_home: Path, **extra: str) -> dict[str, str]:
    """A child's environment: no DASHSCOPE_* of the developer, state under ``state_home``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DASHSCOPE_")}
    env["XDG_STATE_HOME"] = str(state_home)
    env.pop("PYTHONWARNINGS", None)
    env.update(extra)
    return env


def tyqw_command(*args: str) -> list[str]:
    """``tyqw`` run by this Python; -W error turns a leak's ResourceWarning into a failure."""
    return [sys.executable, "-W", "error", "-m", "tyqw", *args]


def run_tyqw(env: Mapping[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        tyqw_command(*args),
        capture_output=True,
        text=True,
        encoding="utf-8",
        env=dict(env),
        timeout=BOUND,
        check=False,
    )


@dataclass
class Simulate:
    """A running ``tyqw simulate``: what it printed, and the environment it exported."""

    proc: subprocess.Popen[bytes]
    banner: str
    exports: dict[str, str]

    @property
    def base_url(self) -> str:
        return self.exports["DASHSCOPE_BASE_URL"]


@contextmanager
def simulate(state_home: Path, *args: str) -> Iterator[Simulate]:
    """Start ``tyqw simulate --port 0 --delay 0 ARGS``; Ctrl-C it at the end, which must
    end it with status 0 and the one line ``tyqw: simulator stopped``."""
    proc = subprocess.Popen(
        tyqw_command("simulate", "--port", "0", "--delay", "0", *args),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=child_env(state_home),
    )
    assert proc.stdout is not None
    try:
        banner = _read_until(proc.stdout.fileno(), r"export (.*)\n")
        line = re.search(r"export (.*)\n", banner)
        assert line is not None
        exports = dict(item.split("=", 1) for item in line.group(1).split())
        yield Simulate(proc, banner, exports)
    finally:
        if sys.platform == "win32":
            proc.kill()
        else:
            proc.send_signal(signal.SIGINT)
        try:
            _, err = proc.communicate(timeout=BOUND)
        finally:
            if proc.poll() is None:
                proc.kill()
    if sys.platform != "win32":
        assert (proc.returncode, err.decode()) == (0, "tyqw: simulator stopped\n")


def _read_until(fd: int, pattern: str) -> str:
    deadline = time.monotonic() + BOUND
    text = b""
    while not re.search(pattern, text.decode("utf-8", "replace")):
        ready, _, _ = select.select([fd], [], [], max(deadline - time.monotonic(), 0))
        if not ready:
            raise AssertionError(f"no {pattern!r} in time; got {text!r}")
        data = os.read(fd, 65536)
        if not data:
            raise AssertionError(f"output ended before {pattern!r}; got {text!r}")
        text += data
    return text.decode()
