"""Run the whole comparison: tyqw vs its peers vs the hand-written floor.

    python3 benchmarks/run.py                 # everything (about half an hour on 2 cores)
    python3 benchmarks/run.py --quick         # tiny sizes, proves the harness works
    python3 benchmarks/run.py --clients floor,tyqw_stream --scenarios single,flat --reps 3
    python3 benchmarks/run.py --profile       # also cProfile the tyqw runners

It creates ``benchmarks/.env/`` (peers from requirements.txt plus ``pip install -e`` of
the repo) on first use and re-runs itself inside it. It starts ``server.py`` in its own
process, then runs every (client, scenario) pair in a fresh ``runner.py`` process,
interleaving clients over the repetitions, and writes ``results/latest.json``,
``results/latest.md`` and the chart. Exit status 1 when a runner broke or a client failed
in a way it is not known to fail.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import io
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
ENV = HERE / ".env"
REQUIREMENTS = HERE / "requirements.txt"
RESULTS = HERE / "results"


# -- the environment ---------------------------------------------------------------


def env_python() -> Path:
    return ENV / "bin" / "python"


def env_version() -> str:
    """The Python version benchmarks/.env was made with ("" if there is none)."""
    try:
        cfg = (ENV / "pyvenv.cfg").read_text()
    except OSError:
        return ""
    for line in cfg.splitlines():
        key, _, value = line.partition("=")
        if key.strip() in ("version", "version_info"):
            return ".".join(value.strip().split(".")[:2])
    return ""


def ensure_env() -> None:
    """Create benchmarks/.env with the Python running this script (remade if another
    Python made it) and (re)install when requirements or pyproject change."""
    running = f"{sys.version_info[0]}.{sys.version_info[1]}"
    if not in_env() and env_python().exists() and env_version() != running:
        print(f"{ENV} was made with Python {env_version()}: remaking it", file=sys.stderr)
        shutil.rmtree(ENV)
    if not env_python().exists():
        print(f"creating {ENV} ...", file=sys.stderr, flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(ENV)], check=True)
    stamp = ENV / ".bench-stamp"
    digest = hashlib.sha256()
    for path in (REQUIREMENTS, ROOT / "pyproject.toml"):
        digest.update(path.read_bytes())
    want = digest.hexdigest()
    if stamp.exists() and stamp.read_text() == want:
        return
    print("installing peers and tyqw into benchmarks/.env ...", file=sys.stderr, flush=True)
    subprocess.run(
        [
            str(env_python()),
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "-r",
            str(REQUIREMENTS),
            "-e",
            str(ROOT),
        ],
        check=True,
    )
    stamp.write_text(want)


def in_env() -> bool:
    return Path(sys.prefix).resolve() == ENV.resolve()


# -- the server --------------------------------------------------------------------


class Server:
    """server.py in its own process; dies with us (it watches its stdin)."""

    def __init__(self, quick: bool) -> None:
        self.proc = subprocess.Popen(
            [
                sys.executable,
                str(HERE / "server.py"),
                "--port",
                "0",
                "--watch-stdin",
                "--prerender",
                "quick" if quick else "full",
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError("the benchmark server did not start")
        self.port = json.loads(line)["port"]
        self.base_url = f"http://127.0.0.1:{self.port}/api/v1"
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    def stats(self) -> dict[str, Any]:
        url = f"http://127.0.0.1:{self.port}/__bench/stats"
        with self._opener.open(url, timeout=10) as response:
            return json.loads(response.read())  # type: ignore[no-any-return]

    def stop(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.terminate()
            self.proc.wait(timeout=5)


# -- running ------------------------------------------------------------------------


def runner_env(baseline: str = "") -> dict[str, str]:
    """The runner's environment; ``baseline``: a folder whose ``tyqw`` package is
    imported instead of this checkout's (``--baseline``)."""
    env = dict(os.environ)
    if baseline:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, (baseline, env.get("PYTHONPATH"))))
    env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost"
    env.pop("DASHSCOPE_API_KEY", None)
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


def run_one(
    server: Server,
    client: str,
    scenario: str,
    quick: bool,
    profile: str = "",
    baseline: str = "",
) -> dict[str, Any]:
    """One runner process; a client named ``<client>@base`` runs on ``baseline``."""
    name, on_baseline = client.removesuffix("@base"), client.endswith("@base")
    cmd = [
        sys.executable,
        str(HERE / "runner.py"),
        "--client",
        name,
        "--scenario",
        scenario,
        "--base-url",
        server.base_url,
    ]
    if quick:
        cmd.append("--quick")
    if profile:
        cmd += ["--profile", profile]
    before = server.stats()
    try:
        proc = subprocess.run(
            cmd,
            capture_output=True,
            text=True,
            timeout=120 if quick else 900,
            env=runner_env(baseline if on_baseline else ""),
        )
    except subprocess.TimeoutExpired:
        return {"client": client, "scenario": scenario, "status": "error", "error": "timeout"}
    after = server.stats()
    result: dict[str, Any] | None = None
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith("{"):
            try:
                result = json.loads(line)
                break
            except ValueError:
                pass
    if result is None:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-5:]
        return {
            "client": client,
            "scenario": scenario,
            "status": "error",
            "error": f"exit {proc.returncode}, no result line: " + " | ".join(tail),
        }
    result["client"] = client
    served = after["events"] - before["events"]
    result["server_cpu_s"] = after["cpu_s"] - before["cpu_s"]
    result["server_events"] = served
    if served:
        result["server_cpu_us_per_event"] = result["server_cpu_s"] / served * 1e6
    if result["status"] == "fails" and not result.get("expected_failure"):
        result["stderr_tail"] = proc.stderr.strip().splitlines()[-8:]
    return result


def import_times(samples: int) -> dict[str, Any]:
    """``import aiohttp`` vs ``import tyqw`` in fresh interpreters, interleaved.

    tyqw's bytecode is compiled first, as ``pip install`` compiles an installed package's:
    an editable checkout under ``PYTHONDONTWRITEBYTECODE`` would otherwise compile every
    module from source on every import, which no installed user pays.
    """
    modules = ("aiohttp", "tyqw")
    subprocess.run(
        [sys.executable, "-m", "compileall", "-q", str(ROOT / "tyqw")],
        check=True,
        capture_output=True,
    )
    raw: dict[str, dict[str, list[float]]] = {m: {"importtime": [], "wall": []} for m in modules}
    base: list[float] = []
    env = runner_env()
    for i in range(samples):
        started = time.perf_counter()
        subprocess.run([sys.executable, "-c", "pass"], check=True, env=env)
        base.append(time.perf_counter() - started)
        for mod in modules if i % 2 == 0 else modules[::-1]:
            started = time.perf_counter()
            proc = subprocess.run(
                [sys.executable, "-c", f"import {mod}"], capture_output=True, text=True, env=env
            )
            wall = time.perf_counter() - started
            if proc.returncode != 0:
                return {"error": f"import {mod} failed: {proc.stderr.strip()[-300:]}"}
            raw[mod]["wall"].append(wall)
            proc = subprocess.run(
                [sys.executable, "-X", "importtime", "-c", f"import {mod}"],
                capture_output=True,
                text=True,
                env=env,
            )
            for line in proc.stderr.splitlines():
                parts = line.split("|")
                if len(parts) == 3 and parts[2].rstrip() == f" {mod}":
                    raw[mod]["importtime"].append(int(parts[1]) / 1e3)
    base_ms = statistics.median(base) * 1e3
    out: dict[str, Any] = {"samples": samples, "baseline_wall_ms": base_ms, "modules": {}}
    for mod in modules:
        out["modules"][mod] = {
            "importtime_ms": statistics.median(raw[mod]["importtime"])
            if raw[mod]["importtime"]
            else None,
            "wall_ms": statistics.median(raw[mod]["wall"]) * 1e3 - base_ms,
        }
    a, t = out["modules"]["aiohttp"], out["modules"]["tyqw"]
    if a["importtime_ms"] is not None and t["importtime_ms"] is not None:
        out["delta_ms"] = t["importtime_ms"] - a["importtime_ms"]
    out["delta_wall_ms"] = t["wall_ms"] - a["wall_ms"]
    return out


def profile_text(path: Path, events: int, top: int = 25, scenario: str = "single") -> str:
    import pstats

    buf = io.StringIO()
    stats = pstats.Stats(str(path), stream=buf)
    total = stats.total_tt  # type: ignore[attr-defined]
    buf.write(
        f"cProfile of the {scenario} scenario: {total:.3f} s profiled for {events:,} "
        f"events = {total / events * 1e6:.1f} µs/event under the profiler "
        "(it inflates small functions)\n"
    )
    buf.write(f"top {top} by own time; 'own us/ev' = own time per event\n\n")
    buf.write(f"{'own us/ev':>9} {'cum us/ev':>9} {'calls/ev':>8}  function\n")
    rows = sorted(
        stats.stats.items(),  # type: ignore[attr-defined]
        key=lambda kv: kv[1][2],
        reverse=True,
    )
    for (file, line, func), (_cc, nc, tt, ct, _callers) in rows[:top]:
        where = f"{Path(file).name}:{line}({func})" if line else func
        buf.write(
            f"{tt / events * 1e6:9.2f} {ct / events * 1e6:9.2f} {nc / events:8.2f}  {where}\n"
        )
    return buf.getvalue()


# -- main -----------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    sys.path.insert(0, str(HERE))
    from clients import CLIENTS
    from scenarios import SCENARIO_NAMES

    parser = argparse.ArgumentParser(
        description="tyqw vs peers vs the hand-written floor: client CPU per SSE event."
    )
    parser.add_argument("--quick", action="store_true", help="tiny sizes, 1 repetition")
    parser.add_argument(
        "--clients", default=",".join(CLIENTS), help=f"comma list of {','.join(CLIENTS)}"
    )
    parser.add_argument(
        "--scenarios",
        default=",".join((*SCENARIO_NAMES, "import")),
        help=f"comma list of {','.join(SCENARIO_NAMES)},import",
    )
    parser.add_argument("--reps", type=int, default=0, help="repetitions (default 5, quick 1)")
    parser.add_argument(
        "--import-samples", type=int, default=0, help="import-time samples (default 15, quick 3)"
    )
    parser.add_argument("--chart", default=str(RESULTS / "cpu_per_event.png"))
    parser.add_argument("--out", default=str(RESULTS), help="folder for latest.json / latest.md")
    parser.add_argument(
        "--profile", action="store_true", help="also cProfile the tyqw runners and the floor"
    )
    parser.add_argument(
        "--profile-scenario", default="single", help="the scenario --profile runs (single)"
    )
    parser.add_argument(
        "--baseline",
        default="",
        metavar="DIR",
        help="also run each tyqw client with DIR/tyqw (e.g. an exported older commit) as "
        "<client>@base, interleaved in the same repetitions",
    )
    parser.add_argument(
        "--from-json",
        default="",
        metavar="PATH",
        help="measure nothing: rebuild the report and chart from a latest.json",
    )
    args = parser.parse_args(argv)
    args.clients = [c.strip() for c in args.clients.split(",") if c.strip()]
    args.scenarios = [s.strip() for s in args.scenarios.split(",") if s.strip()]
    unknown = [c for c in args.clients if c not in CLIENTS]
    unknown += [s for s in args.scenarios if s not in (*SCENARIO_NAMES, "import")]
    if unknown:
        parser.error(f"unknown client or scenario: {', '.join(unknown)}")
    args.reps = args.reps or (1 if args.quick else 5)
    args.import_samples = args.import_samples or (3 if args.quick else 15)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    ensure_env()
    if not in_env():
        python = str(env_python())
        os.execv(python, [python, str(Path(__file__).resolve()), *sys.argv[1:]])

    from clients import CLIENTS, FLOOR, TYQW
    from scenarios import scenarios

    if args.from_json:
        saved = json.loads(Path(args.from_json).read_text())
        meta, results, imports = saved["meta"], saved["results"], saved["imports"]
        profiles = saved.get("profiles", {})
        return write_report(args, meta, results, imports, profiles)

    table = scenarios(args.quick)
    clients = [c for c in CLIENTS if c in args.clients]  # report order
    if FLOOR not in clients:
        clients.insert(0, FLOOR)  # every ratio needs it
    if args.baseline:
        args.baseline = str(Path(args.baseline).resolve())
        clients += [f"{c}@base" for c in clients if c in TYQW]
    names = [s for s in table if s in args.scenarios]
    started = time.time()
    results: list[dict[str, Any]] = []
    profiles: dict[str, str] = {}
    server = Server(args.quick)
    try:
        for rep in range(args.reps):
            for name in names:
                # Interleave: each repetition starts one client later (A B C, B C A, ...).
                order = clients[rep % len(clients) :] + clients[: rep % len(clients)]
                for client in order:
                    result = run_one(server, client, name, args.quick, baseline=args.baseline)
                    result["rep"] = rep
                    results.append(result)
                    _progress(rep, args.reps, result)
        if args.profile:
            out_dir = Path(args.out)
            out_dir.mkdir(parents=True, exist_ok=True)
            what = args.profile_scenario
            for client in [c for c in clients if c in TYQW] + [FLOOR]:
                path = out_dir / f"profile_{client}.prof"
                r = run_one(server, client, what, args.quick, profile=str(path))
                if r["status"] == "ok" and path.exists():
                    profiles[client] = profile_text(path, r["events"], scenario=what)
                    (out_dir / f"profile_{client}.txt").write_text(profiles[client])
                else:
                    profiles[client] = f"not profiled: {r['status']} {r.get('error', '')}"
    finally:
        server.stop()
    imports = None
    if "import" in args.scenarios:
        imports = import_times(args.import_samples)

    meta = {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "python": platform.python_version(),
        "machine": f"{platform.system()} {platform.machine()}, {os.cpu_count()} CPUs",
        "reps": args.reps,
        "quick": args.quick,
        "clients": clients,
        "scenarios": names,
        "seconds": round(time.time() - started, 1),
        "argv": sys.argv[1:],
    }
    return write_report(args, meta, results, imports, profiles)


def write_report(
    args: argparse.Namespace,
    meta: dict[str, Any],
    results: list[dict[str, Any]],
    imports: dict[str, Any] | None,
    profiles: dict[str, str],
) -> int:
    """Write latest.md, latest.json and the chart; return the exit status."""
    from clients import FLOOR, TYQW
    from report import Summary, chart, checks, markdown
    from scenarios import scenarios

    clients, names = meta["clients"], meta["scenarios"]
    summary = Summary(results)
    target_checks = checks(summary, imports, clients)
    table = scenarios(meta["quick"])
    text = markdown(summary, table, clients, names, target_checks, imports, meta, profiles)
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "latest.md").write_text(text)
    saved = {
        "meta": meta,
        "results": results,
        "targets": [vars(c) for c in target_checks],
        "imports": imports,
        "profiles": profiles,
    }
    (out_dir / "latest.json").write_text(json.dumps(saved, indent=1))
    chart(summary, clients, Path(args.chart), meta["quick"])
    print(text)
    print(f"wrote {out_dir / 'latest.md'}, {out_dir / 'latest.json'}, {args.chart}")

    broken = [
        r
        for r in results
        if r["status"] == "error" or (r["status"] == "fails" and not r.get("expected_failure"))
    ]
    floor_missing = any(
        r["client"] == FLOOR and r["status"] != "ok" for r in results if r["scenario"] in names
    )
    for r in broken:
        print(
            f"BROKEN: {r['client']} / {r['scenario']}: {r.get('error')}",
            file=sys.stderr,
        )
    for client in TYQW:
        if any(r["client"] == client and r["status"] == "unavailable" for r in results):
            print(f"note: {client} unavailable (tyqw.Session missing?)", file=sys.stderr)
    return 1 if broken or floor_missing else 0


def _progress(rep: int, reps: int, r: dict[str, Any]) -> None:
    value = ""
    if r["status"] == "ok":
        value = f"{r['cpu_us_per_event']:.1f} us/event"
        if r.get("ttfe_ms") is not None:
            value += f", ttfe {r['ttfe_ms']:.2f} ms"
    else:
        value = f"{r['status']}: {(r.get('error') or '')[:80]}"
    print(
        f"[{rep + 1}/{reps}] {r['scenario']:<11} {r['client']:<12} {value}",
        file=sys.stderr,
        flush=True,
    )


if __name__ == "__main__":
    sys.exit(main())
