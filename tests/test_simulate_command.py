"""``tyqw simulate`` run as a user runs it: flags, faults from the command line, the
environment it prints, and the offline mode kept apart from it."""

from __future__ import annotations

import re
from pathlib import Path

import aiohttp
import pytest

from tyqw._simulator import DEFAULT_APP_ID, Fault, parse_fault_spec

from .simulate_process import child_env, run_tyqw, simulate

BAD_APP = "Required parameter(AppId) missing or invalid, please check the request parameters."


@pytest.mark.parametrize(
    ("args", "stderr"),
    [
        (
            ["--port", "99999"],
            "tyqw: error: argument --port: must be 0 to 65535, not '99999' "
            "— see tyqw simulate --help\n",
        ),
        (
            ["--port", "-1"],
            "tyqw: error: argument --port: must be 0 to 65535, not '-1' "
            "— see tyqw simulate --help\n",
        ),
        (
            ["--port", "http"],
            "tyqw: error: argument --port: must be 0 to 65535, not 'http' "
            "— see tyqw simulate --help\n",
        ),
        (["--app-id", "a/b"], "tyqw: error: --app-id 'a/b': expected 1-64 of A-Z a-z 0-9 _ -\n"),
        (
            ["--fault", "teapot"],
            "tyqw: error: --fault 'teapot': unknown fault kind 'teapot' (one of http, error, "
            "cut, truncate, stall, drip, malformed, oversized, html, headers-stall) "
            "(see tyqw simulate --help)\n",
        ),
        (
            ["--fault", "http:200"],
            "tyqw: error: --fault 'http:200': Fault.http needs an error status (400-599) "
            "(see tyqw simulate --help)\n",
        ),
    ],
    ids=["port-too-big", "port-negative", "port-not-a-number", "app-id", "kind", "status"],
)
def test_bad_flags_exit_2_with_one_line(tmp_path: Path, args: list[str], stderr: str) -> None:
    """A bad --port, --app-id or --fault exits 2 with one line on stderr, nothing else."""
    result = run_tyqw(child_env(tmp_path), "simulate", *args)
    assert (result.returncode, result.stdout, result.stderr) == (2, "", stderr)


@pytest.mark.parametrize(
    "spec",
    [
        "http",
        "http:abc",
        "http:429@2",
        "http:429,retry-after=soon",
        "error:700",
        "cut:1@2",
        "cut:x",
        "cut:1,2",
        "stall",
        "stall:-1",
        "stall:inf",
        "stall:5,speed=3",
        "stall:1,keepalive=0",
        "oversized",
        "html@1",
        "headers-stall",
        "http:429x0",
        "",
    ],
)
def test_bad_fault_specs_say_why(spec: str) -> None:
    """Every malformed spec is a ValueError with a one-line reason, never a Fault."""
    with pytest.raises(ValueError, match=r"\A[^\n]+\Z"):
        parse_fault_spec(spec)


@pytest.mark.parametrize(
    ("spec", "fault", "times"),
    [
        ("http:429", Fault.http(429), 1),
        ("http:429x2", Fault.http(429), 2),
        ("HTTP:503x10", Fault.http(503), 10),
        (
            "http:429,retry-after=1.5,retry-after-ms=1500",
            Fault.http(429, retry_after=1.5, retry_after_ms=1500),
            1,
        ),
        (
            "http:403,Workspace.AccessDenied,No, not this one.",
            Fault.http(403, "Workspace.AccessDenied", "No, not this one."),
            1,
        ),
        ("error", Fault.stream_error(), 1),
        (
            "error:400,DataInspectionFailed@2",
            Fault.stream_error(after=2, status=400, code="DataInspectionFailed"),
            1,
        ),
        ("cut", Fault.cut(), 1),
        ("cut:3", Fault.cut(after=3), 1),
        ("cut@3x4", Fault.cut(after=3), 4),
        ("truncate:2", Fault.truncate(after=2), 1),
        ("stall:5@2", Fault.stall(5, after=2), 1),
        ("stall:30,keepalive=1@1", Fault.stall(30, after=1, keepalive=1), 1),
        ("drip", Fault.drip(), 1),
        ("malformed", Fault.malformed(), 1),
        ("malformed:0", Fault.malformed(after=0), 1),
        ("oversized:1048576@1", Fault.oversized(1048576, after=1), 1),
        ("html", Fault.content_type(), 1),
        ("html:502", Fault.content_type(status=502), 1),
        ("headers-stall:0.5", Fault.headers_stall(0.5), 1),
    ],
)
def test_fault_specs_map_onto_the_constructors(spec: str, fault: Fault, times: int) -> None:
    """Each spec is the Fault its constructor makes, queued for that many requests."""
    assert parse_fault_spec(spec) == (fault, times)


def test_help_lists_the_fault_specs_and_app_ids(tmp_path: Path) -> None:
    """simulate --help documents --app-id, --fault and every fault kind with examples."""
    result = run_tyqw(child_env(tmp_path), "simulate", "--help")
    assert result.returncode == 0
    for text in ("--app-id ID", "--fault SPEC", "KIND[:ARGS][@AFTER][xTIMES]", "http:429x2"):
        assert text in result.stdout
    for kind in ("http:", "error", "cut", "truncate", "stall:", "drip", "malformed"):
        assert f"\n  {kind}" in result.stdout


async def test_faults_and_app_ids_from_the_command_line(tmp_path: Path) -> None:
    """--fault and --app-id shape what a client gets: faults in order, then normal answers."""
    with simulate(
        tmp_path, "--fault", "http:429x2", "--fault", "cut:1", "--app-id", "app-a",
        "--app-id", "app-b",
    ) as sim:  # fmt: skip
        exports = sim.exports
        auth = {"Authorization": f"Bearer {exports['DASHSCOPE_API_KEY']}"}
        sse = {**auth, "X-DashScope-SSE": "enable"}
        body = {"input": {"prompt": "hi"}}
        url = f"{sim.base_url}/apps/{{}}/completion"
        async with aiohttp.ClientSession() as http:
            statuses = []
            for _ in range(2):
                async with http.post(url.format("app-a"), json=body, headers=auth) as resp:
                    statuses.append((resp.status, (await resp.json())["code"]))
            async with http.post(url.format("app-a"), json=body, headers=sse) as resp:
                with pytest.raises(aiohttp.ClientPayloadError):
                    await resp.read()
            async with http.post(url.format("app-b"), json=body, headers=sse) as resp:
                normal = await resp.text()
            async with http.post(url.format(DEFAULT_APP_ID), json=body, headers=auth) as resp:
                unknown = resp.status, await resp.json()
    assert "Faults for the next requests, in order: http:429x2 cut:1\n" in sim.banner
    assert exports["DASHSCOPE_APP_ID"] == "app-a"
    assert statuses == [(429, "Throttling")] * 2
    assert normal.count("event:result") > 1 and '"finish_reason":"stop"' in normal
    assert unknown[0] == 400 and unknown[1]["message"] == BAD_APP


def test_export_line_sets_both_base_url_names(tmp_path: Path) -> None:
    """The printed export line points tyqw and the official SDK (HTTP_BASE_URL) at it."""
    with simulate(tmp_path) as sim:
        exports = sim.exports
    assert list(exports) == [
        "DASHSCOPE_BASE_URL",
        "DASHSCOPE_HTTP_BASE_URL",
        "DASHSCOPE_API_KEY",
        "DASHSCOPE_APP_ID",
    ]
    assert re.fullmatch(r"http://127\.0\.0\.1:\d+/api/v1", exports["DASHSCOPE_BASE_URL"])
    assert exports["DASHSCOPE_HTTP_BASE_URL"] == exports["DASHSCOPE_BASE_URL"]
    assert exports["DASHSCOPE_APP_ID"] == DEFAULT_APP_ID


def test_offline_runs_do_not_make_the_simulate_conversation_forget(tmp_path: Path) -> None:
    """An offline `tyqw ask` between two asks at `tyqw simulate` leaves its conversation be."""
    state = tmp_path / "xdg-state"
    with simulate(tmp_path / "server") as sim:
        online = child_env(state, **sim.exports)
        offline = child_env(state)
        first = run_tyqw(online, "ask", "你好，我叫小明")
        between = run_tyqw(offline, "ask", "--delay", "0", "我叫小红")
        second = run_tyqw(online, "ask", "我叫什么名字？")
        listed = run_tyqw(online, "sessions", "list")
    assert (first.returncode, between.returncode, second.returncode) == (0, 0, 0)
    assert second.stdout == "你叫小明。你在前面的对话里告诉过我，我一直记着呢。\n"
    # The offline run kept its conversation in its own memory: only simulate's is stored.
    apps = [row.split()[1] for row in listed.stdout.splitlines()[1:]]
    assert apps == [DEFAULT_APP_ID]
