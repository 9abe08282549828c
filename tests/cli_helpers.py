"""Running ``tyqw`` and the examples as a user would: subprocesses and a pseudo-terminal.

Every wait has a deadline; nothing sleeps to wait for output.
"""

from __future__ import annotations

import asyncio
import codecs
import os
import re
import select
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

BOUND = 15.0  # seconds: generous for a slow CI machine, never reached when things work
POSIX_ONLY = pytest.mark.skipif(sys.platform == "win32", reason="needs POSIX signals and ptys")
EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
NO_KEY_NOTICE = (
    "tyqw: no DASHSCOPE_API_KEY set, so using the built-in offline simulator (canned "
    "replies). Set DASHSCOPE_API_KEY and DASHSCOPE_APP_ID to talk to your Bailian app."
)


def clean_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """The environment of a child: no DASHSCOPE_* of the developer, state under tmp."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DASHSCOPE_")}
    env["XDG_STATE_HOME"] = str(tmp_path / "xdg-state")
    env.pop("PYTHONWARNINGS", None)
    env.update(extra)
    return env


def command(*args: str | bytes) -> list[str | bytes]:
    """``python -m tyqw ARGS``; an argument may be bytes (what a shell passes as is)."""
    # -W error: a leaked socket or session would print a ResourceWarning to stderr, and
    # every test asserts stderr.
    return [sys.executable, "-W", "error", "-m", "tyqw", *args]


def example(name: str) -> list[str | bytes]:
    """``python examples/NAME``."""
    return [sys.executable, "-W", "error", str(EXAMPLES / name)]


def run(
    argv: Sequence[str | bytes], env: Mapping[str, str], stdin: str | bytes = ""
) -> subprocess.CompletedProcess[str]:
    """Run ``argv`` to its end; stdout and stderr as text (UTF-8)."""
    result = subprocess.run(
        argv,
        input=stdin.encode() if isinstance(stdin, str) else stdin,
        capture_output=True,
        env=dict(env),
        timeout=BOUND,
        check=False,
    )
    return subprocess.CompletedProcess(
        result.args,
        result.returncode,
        result.stdout.decode("utf-8", "replace"),
        result.stderr.decode("utf-8", "replace"),
    )


def tyqw_run(
    env: Mapping[str, str], *args: str | bytes, stdin: str | bytes = ""
) -> subprocess.CompletedProcess[str]:
    return run(command(*args), env, stdin)


async def run_async(
    argv: Sequence[str | bytes], env: Mapping[str, str], stdin: str = ""
) -> tuple[int, str, str]:
    """Run ``argv`` while this test's own event loop keeps serving a simulator."""
    proc = await asyncio.create_subprocess_exec(
        *argv,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=dict(env),
    )
    out, err = await asyncio.wait_for(proc.communicate(stdin.encode()), BOUND)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def tyqw_async(env: Mapping[str, str], *args: str, stdin: str = "") -> tuple[int, str, str]:
    return await run_async(command(*args), env, stdin)


@asynccontextmanager
async def serving(env: Mapping[str, str], *args: str, cwd: Path) -> AsyncIterator[str]:
    """``tyqw serve --port 0 ARGS`` running in ``cwd``, for the block: its root URL.
    Ctrl-C at the end must stop it with status 0."""
    proc = await asyncio.create_subprocess_exec(
        *command("serve", "--port", "0", *args),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=dict(env),
        cwd=cwd,
    )
    assert proc.stdout is not None
    try:
        while True:
            line = (await asyncio.wait_for(proc.stdout.readline(), BOUND)).decode()
            if not line:
                _, err = await asyncio.wait_for(proc.communicate(), BOUND)
                pytest.fail(f"tyqw serve exited: {err.decode()}")
            opened = re.match(r"tyqw relay: open (http://\S+)/ in a browser", line)
            if opened:
                break
        yield opened.group(1)
        proc.send_signal(signal.SIGINT)
        _, err = await asyncio.wait_for(proc.communicate(), BOUND)
        assert proc.returncode == 0, err.decode()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


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


def wait_until_asleep(pid: int) -> None:
    """Wait until process ``pid`` sleeps in the kernel (waiting for input); Linux only.

    Elsewhere, or once the process is gone, return at once. A signal sent then
    interrupts that wait, rather than landing in whatever Python code runs next.
    """
    stat = Path(f"/proc/{pid}/stat")
    deadline = time.monotonic() + BOUND
    while True:
        try:
            state = stat.read_text().rsplit(")", 1)[1].split()[0]
        except OSError:  # no /proc (macOS), or the process is gone
            return
        if state != "R":
            return
        if time.monotonic() > deadline:
            pytest.fail(f"process {pid} never waited for input")
        time.sleep(0.001)  # a bounded poll of the process's state, not a wait for output


# The child makes the pty its controlling terminal, so typing Ctrl-C sends it SIGINT.
_ATTACH = (
    "import fcntl, os, sys, termios; fcntl.ioctl(0, termios.TIOCSCTTY, 0); "
    "os.execv(sys.executable, [sys.executable, *sys.argv[1:]])"
)


class Terminal:
    """A child on a pseudo-terminal: type keys, wait for text with a deadline."""

    def __init__(
        self, argv: Sequence[str | bytes], env: Mapping[str, str], *, term: str = "dumb"
    ) -> None:
        import fcntl
        import struct
        import termios

        self.fd, child = os.openpty()
        fcntl.ioctl(self.fd, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 160, 0, 0))
        self.proc = subprocess.Popen(
            [sys.executable, "-c", _ATTACH, *argv[1:]],
            stdin=child,
            stdout=child,
            stderr=child,
            start_new_session=True,
            env={**env, "TERM": term},
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

    def idle(self) -> None:
        """Wait until the child sleeps, waiting for a key; call it before typing Ctrl-C.

        Python's ``input()`` notices a signal only when it interrupts the wait for a key;
        one that lands while the last key is still being handled waits for the next
        signal. People never type that fast.
        """
        wait_until_asleep(self.proc.pid)

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
        self.transcript += self.seen[0]
        self.seen[0] = ""
        return self.proc.wait(BOUND)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(BOUND)
        os.close(self.fd)

    def __enter__(self) -> Terminal:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
