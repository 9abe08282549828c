"""What ``tyqw`` reads from the command line and the environment, checked before any request.

A value it cannot use (text that is not UTF-8, a key no header can carry, a URL, app id,
workspace or name the SDK refuses) is one line on stderr and exit status 2, offline too;
hints name the flags a user types, never the SDK's keyword arguments.
"""

from __future__ import annotations

import ast
import re
import socket
from pathlib import Path

import pytest

import tyqw
from tyqw.testing import BailianSimulator

from .cli_helpers import NO_KEY_NOTICE, clean_env, tyqw_async, tyqw_run

KEY = {"DASHSCOPE_API_KEY": "sk-x", "DASHSCOPE_APP_ID": "app"}
BAD_BYTE = "\udce9"  # how Python passes on the byte 0xe9 of `tyqw ask $'caf\xe9'`
UNDECODABLE = r"not valid UTF-8 text at character \d+ \(byte 0xe9\)"
USAGE_ERRORS = {
    "no-command": ([], {}, r"the following arguments are required: COMMAND — see tyqw --help"),
    "no-prompt": (["ask"], {}, r"required: PROMPT — see tyqw ask --help"),
    "empty-prompt": (["ask", "  "], {}, r"the prompt is empty"),
    "undecodable-prompt": (["ask", f"caf{BAD_BYTE}"], {}, r"argument PROMPT: " + UNDECODABLE),
    "key-without-app-id": (
        ["ask", "hi"],
        {"DASHSCOPE_API_KEY": "sk-x"},
        r"no app id: pass --app-id or set DASHSCOPE_APP_ID",
    ),
    "bad-app-id": (["ask", "--app-id", "a/b", "hi"], KEY, r"invalid app_id 'a/b'"),
    "undecodable-app-id": (["ask", "--app-id", f"a{BAD_BYTE}", "hi"], KEY, UNDECODABLE),
    "bad-app-id-in-env": (["ask", "hi"], {**KEY, "DASHSCOPE_APP_ID": "a b"}, r"invalid app_id"),
    "plain-http-to-remote-host": (
        ["ask", "--app-id", "app", "hi"],
        {**KEY, "DASHSCOPE_BASE_URL": "http://example.com/api/v1"},
        r"refusing to send the API key over plain http to example\.com; use https, or pass "
        r"--allow-insecure-http if you really mean it",
    ),
    "base-url-not-http": (["ask", "--base-url", "ftp://x/api/v1", "hi"], KEY, r"http\(s\) URL"),
    "base-url-bad-port": (
        ["ask", "--base-url", "https://example.com:99999/api/v1", "hi"],
        KEY,
        r"argument --base-url: 'https://example\.com:99999/api/v1' is not a URL \(Port out of",
    ),
    "base-url-space": (["ask", "--base-url", "https://a b/api", "hi"], KEY, r"holds a space"),
    "base-url-bracket": (["ask", "--base-url", "https://[::1/api", "hi"], KEY, r"not a URL"),
    "base-url-query": (["ask", "--base-url", "https://h/api?x=1", "hi"], KEY, r"query"),
    "bad-workspace": (["ask", "--workspace", "a/b", "hi"], KEY, r"invalid workspace 'a/b'"),
    "undecodable-workspace": (["ask", "--workspace", f"w{BAD_BYTE}", "hi"], KEY, UNDECODABLE),
    "empty-name": (["ask", "--name", "", "hi"], {}, r"argument --name: must not be empty"),
    "control-in-name": (["ask", "--name", "a\nb", "hi"], {}, r"'a\\nb' holds a control"),
    "undecodable-name": (["chat", "--name", f"x{BAD_BYTE}"], {}, r"--name: " + UNDECODABLE),
    "conversations-no-action": (["conversations"], {}, r"required: ACTION"),
    "clear-nothing": (["conversations", "clear"], {}, r"clear needs a NAME or --all"),
    "clear-both": (["sessions", "clear", "x", "--all"], {}, r"needs a NAME or --all \(not both\)"),
    "bad-delay": (["chat", "--delay", "soon"], {}, r"not a number of seconds"),
    # Offline, the flags for a real app are unused, and checked all the same.
    "offline-bad-app-id": (["ask", "--app-id", "a/b", "hi"], {}, r"invalid app_id 'a/b'"),
    "offline-bad-base-url": (["chat", "--base-url", "ftp://x"], {}, r"http\(s\) URL"),
    "offline-plain-http": (
        ["ask", "--base-url", "http://example.com/api/v1", "hi"],
        {},
        r"pass --allow-insecure-http",
    ),
    "offline-bad-workspace": (["ask", "--offline", "--workspace", "-", "hi"], KEY, "workspace"),
}


@pytest.mark.parametrize(
    ("args", "env", "stderr"), list(USAGE_ERRORS.values()), ids=list(USAGE_ERRORS)
)
def test_usage_errors_exit_2_with_one_line(
    tmp_path: Path, args: list[str], env: dict[str, str], stderr: str
) -> None:
    """A mistake in what the command line reads: exit 2, one line on stderr, nothing else."""
    result = tyqw_run(clean_env(tmp_path, **env), *args)
    assert result.returncode == 2
    assert result.stdout == ""
    assert re.fullmatch(r"tyqw: error: [^\n]*\n", result.stderr), result.stderr
    assert re.search(stderr, result.stderr), result.stderr
    assert "allow_insecure_http" not in result.stderr  # the SDK's keyword, not a flag


def test_an_undecodable_prompt_on_stdin_exits_2(tmp_path: Path) -> None:
    """`tyqw ask -` with bytes that are not UTF-8: one line, exit 2, nothing sent."""
    result = tyqw_run(clean_env(tmp_path), "ask", "-", stdin=b"caf\xe9\n")
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr == (
        "tyqw: error: the prompt on stdin is not valid UTF-8 text at character 4 (byte 0xe9)\n"
    )


BAD_KEYS = {
    "newline-inside": ("sk-4f9d2b\n7e1a6c\n", "a newline at character 10 of 17"),
    "space-inside": (" sk-4f9d 2b7e1a6c", "a space at character 9 of 17"),
    "tab-inside": ("sk-4f9d\t2b7e1a6c", "a tab at character 8"),
    "control": ("sk-4f9d2b7e1a6c\x7f", "the character U\\+007F"),
    "non-ascii": ("sk-4f9d2b7e1a6cé", "the character U\\+00E9"),
    "undecodable": (f"sk-4f9d2b7e1a6c{BAD_BYTE}", "an undecodable byte"),
}


@pytest.mark.parametrize(("key", "what"), list(BAD_KEYS.values()), ids=list(BAD_KEYS))
def test_a_key_that_cannot_go_in_a_header_exits_2_before_any_request(
    tmp_path: Path, key: str, what: str
) -> None:
    """DASHSCOPE_API_KEY with a newline, space or other non-token character inside: one
    line naming the variable, exit 2 (whitespace around the key is simply removed)."""
    with socket.socket() as server:  # where the request would go: it must never connect
        server.bind(("127.0.0.1", 0))
        server.listen()
        server.setblocking(False)
        url = f"http://127.0.0.1:{server.getsockname()[1]}/api/v1"
        env = clean_env(
            tmp_path, DASHSCOPE_API_KEY=key, DASHSCOPE_APP_ID="app", DASHSCOPE_BASE_URL=url
        )
        for args in (["ask", "hi"], ["chat"]):
            result = tyqw_run(env, *args, stdin="hi\n")
            assert (result.returncode, result.stdout) == (2, ""), result.stderr
            assert re.fullmatch(
                rf"tyqw: error: the API key from DASHSCOPE_API_KEY holds {what}[^\n]*, which "
                r"an HTTP header cannot carry; set it to the key alone \(the key is not shown\)\n",
                result.stderr,
            ), result.stderr
            assert "4f9d" not in result.stderr  # nothing of the key itself
        with pytest.raises(BlockingIOError):
            server.accept()


def test_offline_says_which_flags_it_does_not_use(tmp_path: Path) -> None:
    """No key: valid --app-id/--base-url/--workspace are checked, then named as unused."""
    result = tyqw_run(
        clean_env(tmp_path),
        "ask",
        "--delay",
        "0",
        "--app-id",
        "my-app",
        "--base-url",
        "https://dashscope-intl.aliyuncs.com/api/v1",
        "--workspace",
        "ws-1",
        "hello",
    )
    assert result.returncode == 0
    assert result.stdout.startswith("Hello! I'm the local Bailian simulator")
    assert result.stderr == (
        NO_KEY_NOTICE + "\ntyqw: offline mode does not use --app-id, --base-url, --workspace "
        "(they are for your Bailian app, with DASHSCOPE_API_KEY)\n"
    )


async def test_a_store_warning_names_the_flag(tmp_path: Path) -> None:
    """An unusable state folder is one warning line that names --state-dir, not state_dir=."""
    (tmp_path / "a-file").write_text("")
    state = tmp_path / "a-file" / "state"
    async with BailianSimulator() as sim:  # offline runs keep no state: a real app does
        env = clean_env(
            tmp_path,
            DASHSCOPE_API_KEY=sim.api_key,
            DASHSCOPE_BASE_URL=sim.base_url,
            DASHSCOPE_APP_ID=sim.app_id,
        )
        code, _, err = await tyqw_async(env, "ask", "--state-dir", str(state), "hi")
    assert code == 0
    [warning] = err.splitlines()
    assert warning.startswith(f"tyqw: cannot read conversation ids in {state} ")
    assert "Pass --state-dir or set XDG_STATE_HOME" in warning
    assert "state_dir=" not in warning


def _address_of_this_machine() -> str:
    """A non-loopback IPv4 address of this machine (no packet is sent to find it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))  # TEST-NET-1: only picks the outgoing interface
        except OSError:
            pytest.skip("this machine has no network interface but loopback")
        address: str = probe.getsockname()[0]
    if address.startswith("127."):
        pytest.skip("this machine has no network interface but loopback")
    return address


async def test_allow_insecure_http_lets_the_key_go_to_a_plain_http_host(tmp_path: Path) -> None:
    """Plain http to another host is refused (exit 2, naming the flag) until the flag is given."""
    async with BailianSimulator(host=_address_of_this_machine()) as sim:
        env = clean_env(
            tmp_path,
            DASHSCOPE_API_KEY=sim.api_key,
            DASHSCOPE_BASE_URL=sim.base_url,
            DASHSCOPE_APP_ID=sim.app_id,
        )
        refused = await tyqw_async(env, "ask", "hello")
        allowed = await tyqw_async(env, "ask", "--allow-insecure-http", "hello")
    assert refused[0] == 2
    assert refused[2].endswith("pass --allow-insecure-http if you really mean it\n")
    assert allowed[:3:2] == (0, "")
    assert allowed[1].startswith("Hello! I'm the local Bailian simulator")
    assert len(sim.requests) == 1


def test_environment_names_are_read_only_through_the_config_module() -> None:
    """DASHSCOPE_* and TYQW_STORE are named, as a value to read or set, only in
    tyqw/_config.py: every command, the relay and the simulator read them alike."""
    package = Path(tyqw.__file__).parent
    found = []
    for path in sorted(package.rglob("*.py")):
        if path.name == "_config.py" and path.parent == package:
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if (
                isinstance(node, ast.Constant)
                and isinstance(node.value, str)
                and re.fullmatch(r"DASHSCOPE_[A-Z_]+|TYQW_STORE", node.value)
            ):
                found.append(f"{path.relative_to(package)}:{node.lineno} {node.value}")
    assert found == []
