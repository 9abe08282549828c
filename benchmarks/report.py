"""Turn the runners' result lines into medians, ratios to the floor, target checks,
a Markdown report and a chart. No measuring here."""

from __future__ import annotations

import statistics
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from clients import CLIENTS, FLOOR, TYQW
from scenarios import Scenario

PEERS = tuple(c for c in CLIENTS if c != FLOOR and c not in TYQW)
BASELINE = "@base"  # suffix of a tyqw client run on the baseline checkout (run.py --baseline)


def is_tyqw(client: str) -> bool:
    """A tyqw client, on this checkout or on the baseline."""
    return client.removesuffix(BASELINE) in TYQW


def describe(client: str) -> str:
    if client.endswith(BASELINE):
        return CLIENTS[client.removesuffix(BASELINE)][1] + ", on the baseline checkout"
    return CLIENTS[client][1]


@dataclass(frozen=True)
class Row:
    scenario: str
    metric: str
    label: str
    compare: str = "ratio"  # "ratio" to the floor, "diff" from the floor, or "none"
    digits: int = 1


def rows(table: dict[str, Scenario]) -> list[Row]:
    def t(name: str) -> str:
        return table[name].title

    return [
        Row("single", "cpu_us_per_event", f"{t('single')} (µs/event)"),
        Row("sliced", "cpu_us_per_event", f"{t('sliced')} (µs/event)"),
        Row("sliced_random", "cpu_us_per_event", f"{t('sliced_random')} (µs/event)"),
        Row("concurrent", "cpu_us_per_event", f"{t('concurrent')} (µs/event)"),
        Row("fast_single", "cpu_us_per_event", f"{t('fast_single')} (µs/event)"),
        Row("fast_concurrent", "cpu_us_per_event", f"{t('fast_concurrent')} (µs/event)"),
        Row(
            "fast_sequential",
            "cpu_us_per_request",
            f"{t('fast_sequential')} (µs/request)",
            digits=0,
        ),
        Row("sequential", "cpu_us_per_request", f"{t('sequential')} (µs/request)", digits=0),
        Row("ttfe", "ttfe_ms", f"{t('ttfe')} (ms)", digits=2),
        Row("cumulative", "cpu_us_per_event", f"{t('cumulative')} (µs/event)"),
        Row("bigline", "cpu_ms_per_request", f"{t('bigline')} (ms/reply)", digits=2),
        Row("flat", "cpu_us_per_event", "the single-stream reply written in one go (µs/event)"),
        Row("flat", "flat_ratio", f"{t('flat')} (CPU ratio)", compare="none", digits=2),
        Row("memory", "peak_rss_mb", f"{t('memory')} (MB)", compare="diff"),
        Row("sequential", "rss_growth_mb", "RSS growth over the sequential turns (MB)", "none", 2),
    ]


def derived(result: dict[str, Any]) -> dict[str, Any]:
    """A runner's result with the report's derived units added."""
    out = dict(result)
    if "cpu_us_per_request" in out:
        out["cpu_ms_per_request"] = out["cpu_us_per_request"] / 1e3
    if "peak_rss_kb" in out:
        out["peak_rss_mb"] = out["peak_rss_kb"] / 1024
    if "rss_growth_kb" in out:
        out["rss_growth_mb"] = out["rss_growth_kb"] / 1024
    return out


class Summary:
    """Medians per (scenario, client) and paired ratios to the floor (same repetition)."""

    def __init__(self, results: Iterable[dict[str, Any]]) -> None:
        self.by: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
        for r in results:
            self.by[r["scenario"], r["client"]].append(derived(r))

    def status(self, scenario: str, client: str) -> str:
        runs = self.by.get((scenario, client), [])
        if not runs:
            return "not run"
        statuses = {r["status"] for r in runs}
        if "ok" in statuses:
            return "ok"
        for s in ("error", "fails", "n/a", "unavailable"):
            if s in statuses:
                return s
        return statuses.pop()

    def values(self, scenario: str, client: str, metric: str) -> list[float]:
        return [
            r[metric]
            for r in self.by.get((scenario, client), [])
            if r["status"] == "ok" and r.get(metric) is not None
        ]

    def median(self, scenario: str, client: str, metric: str) -> float | None:
        values = self.values(scenario, client, metric)
        return statistics.median(values) if values else None

    def paired(
        self, scenario: str, client: str, metric: str, op: Callable[[float, float], float]
    ) -> float | None:
        """Median over repetitions of op(client, floor), pairing runs of the same repetition."""
        floor = {
            r["rep"]: r[metric]
            for r in self.by.get((scenario, FLOOR), [])
            if r["status"] == "ok" and r.get(metric)
        }
        pairs = [
            op(r[metric], floor[r["rep"]])
            for r in self.by.get((scenario, client), [])
            if r["status"] == "ok" and r.get(metric) is not None and r["rep"] in floor
        ]
        return statistics.median(pairs) if pairs else None

    def ratio(self, scenario: str, client: str, metric: str) -> float | None:
        return self.paired(scenario, client, metric, lambda a, b: a / b)

    def diff(self, scenario: str, client: str, metric: str) -> float | None:
        return self.paired(scenario, client, metric, lambda a, b: a - b)

    def cell(self, row: Row, client: str) -> str:
        status = self.status(row.scenario, client)
        if status != "ok":
            return {"not run": "—"}.get(status, status)
        value = self.median(row.scenario, client, row.metric)
        if value is None:
            return "—"
        text = f"{value:,.{row.digits}f}"
        if client == FLOOR or row.compare == "none":
            return text
        if row.compare == "diff":
            d = self.diff(row.scenario, client, row.metric)
            return text if d is None else f"{text} ({d:+.1f})"
        ratio = self.ratio(row.scenario, client, row.metric)
        return text if ratio is None else f"{text} ({ratio:.2f}x)"


@dataclass
class Check:
    target: str
    client: str
    status: str  # PASS, FAIL, n/a
    detail: str


_cpu = ("cpu_us_per_event", 1.25)


def checks(
    summary: Summary, imports: dict[str, Any] | None, clients: Iterable[str] = TYQW
) -> list[Check]:
    """The issue's targets, for each tyqw client that ran."""
    out: list[Check] = []

    def ratio_check(label: str, scenario: str, metric: str, limit: float, client: str) -> None:
        r = summary.ratio(scenario, client, metric)
        if r is None:
            out.append(Check(label, client, "n/a", summary.status(scenario, client)))
        else:
            verdict = "PASS" if r <= limit else "FAIL"
            out.append(Check(label, client, verdict, f"{r:.2f}x floor (limit {limit}x)"))

    def peers_check(label: str, scenario: str, client: str) -> None:
        mine = summary.median(scenario, client, "cpu_us_per_event")
        if mine is None:
            out.append(Check(label, client, "n/a", summary.status(scenario, client)))
            return
        factors = {
            p: v / mine
            for p in PEERS
            if (v := summary.median(scenario, p, "cpu_us_per_event")) is not None
        }
        if not factors:
            out.append(Check(label, client, "n/a", "no peer measured"))
            return
        worst = min(factors, key=factors.__getitem__)
        verdict = "PASS" if factors[worst] >= 2.0 else "FAIL"
        out.append(
            Check(label, client, verdict, f"closest peer {worst}: {factors[worst]:.2f}x tyqw")
        )

    for client in [c for c in clients if is_tyqw(c)]:
        ratio_check("single stream: CPU/event <= 1.10x floor", "single", _cpu[0], 1.10, client)
        peers_check("single stream: >= 2x better than every peer", "single", client)
        for scenario, what in (("sliced", "4,093-byte"), ("sliced_random", "random-size")):
            label = f"{what} writes across events: CPU/event <= 1.10x floor"
            ratio_check(label, scenario, "cpu_us_per_event", 1.10, client)
        ratio_check("200 concurrent: CPU/event <= 1.25x floor", "concurrent", *_cpu, client=client)
        peers_check("200 concurrent: >= 2x better than every peer", "concurrent", client)
        ratio_check(
            "fast server, 1 stream: CPU/event <= 1.10x floor",
            "fast_single",
            "cpu_us_per_event",
            1.10,
            client,
        )
        ratio_check(
            "fast server, 200 concurrent, one state folder: CPU/event <= 1.25x floor",
            "fast_concurrent",
            *_cpu,
            client=client,
        )
        ratio_check(
            "fast server, per request: <= 1.10x floor",
            "fast_sequential",
            "cpu_us_per_request",
            1.10,
            client,
        )
        flat = summary.median("flat", client, "flat_ratio")
        floor_flat = summary.median("flat", FLOOR, "flat_ratio")
        label = "flat over reply length: last/first 1,000 events <= 1.15"
        if flat is None:
            out.append(Check(label, client, "n/a", summary.status("flat", client)))
        else:
            verdict = "PASS" if flat <= 1.15 else "FAIL"
            ref = f", floor {floor_flat:.2f}" if floor_flat is not None else ""
            out.append(Check(label, client, verdict, f"{flat:.2f}{ref}"))
        ratio_check(
            "per request, reused Session: <= 1.10x floor",
            "sequential",
            "cpu_us_per_request",
            1.10,
            client,
        )
        ratio_check("warm time to first event <= 1.2x floor", "ttfe", "ttfe_ms", 1.2, client)
        ratio_check("cumulative reply: CPU/event <= 1.25x floor", "cumulative", *_cpu, client)
        ratio_check(
            "650 KB data line: CPU/reply <= 1.25x floor",
            "bigline",
            "cpu_us_per_request",
            1.25,
            client,
        )
        d = summary.diff("memory", client, "peak_rss_mb")
        label = "peak RSS, long reply: <= floor + 10 MB"
        if d is None:
            out.append(Check(label, client, "n/a", summary.status("memory", client)))
        else:
            out.append(Check(label, client, "PASS" if d <= 10 else "FAIL", f"{d:+.1f} MB"))
        growth = summary.median("sequential", client, "rss_growth_mb")
        label = "RSS growth over the sequential turns < 1 MB"
        if growth is None:
            out.append(Check(label, client, "n/a", summary.status("sequential", client)))
        else:
            out.append(Check(label, client, "PASS" if growth < 1 else "FAIL", f"{growth:+.2f} MB"))
    label = "import tyqw adds <= 30 ms over import aiohttp"
    if imports and imports.get("delta_ms") is not None:
        d = imports["delta_ms"]
        out.append(Check(label, "tyqw", "PASS" if d <= 30 else "FAIL", f"{d:+.1f} ms"))
    elif imports is not None:
        out.append(Check(label, "tyqw", "n/a", imports.get("error", "not measured")))
    return out


def markdown(
    summary: Summary,
    table: dict[str, Scenario],
    clients: list[str],
    scenario_names: list[str],
    target_checks: list[Check],
    imports: dict[str, Any] | None,
    meta: dict[str, Any],
    profiles: dict[str, str],
) -> str:
    mode = "QUICK (tiny sizes: not meaningful)" if meta["quick"] else "full sizes"
    lines = [
        "# tyqw benchmark",
        "",
        f"{meta['date']} · Python {meta['python']} · {meta['machine']} · "
        f"{meta['reps']} repetition(s), medians · {mode}",
        "",
        "Client-process CPU (`time.process_time()`), server in a separate process. "
        "In brackets: the median over repetitions of the ratio to the floor in the same "
        "repetition (peak RSS: the difference in MB).",
        "",
    ]
    header = ["scenario", *clients]
    lines.append("| " + " | ".join(header) + " |")
    lines.append("|---|" + "--:|" * len(clients))
    for row in rows(table):
        if row.scenario not in scenario_names:
            continue
        cells = [summary.cell(row, c) for c in clients]
        lines.append(f"| {row.label} | " + " | ".join(cells) + " |")
    lines += ["", "Clients:", ""]
    for c in clients:
        version = next(
            (
                r["version"]
                for (_, cc), rs in summary.by.items()
                for r in rs
                if cc == c and r.get("version")
            ),
            "",
        )
        lines.append(f"- `{c}`: {describe(c)}" + (f" ({version})" if version else ""))
    if target_checks:
        lines += [
            "",
            "## Targets",
            "",
            "| target | client | status | measured |",
            "|---|---|---|---|",
        ]
        lines += [f"| {c.target} | {c.client} | {c.status} | {c.detail} |" for c in target_checks]
    if imports:
        lines += ["", "## Import time", ""]
        if imports.get("error"):
            lines.append(f"not measured: {imports['error']}")
        else:
            lines += [
                f"Fresh interpreters, median of {imports['samples']}: "
                f"`python -X importtime`, cumulative µs of the top-level module; wall time of "
                f"`python -c 'import X'` minus `python -c pass`.",
                "",
                "| module | -X importtime (ms) | wall (ms) |",
                "|---|--:|--:|",
            ]
            for mod in ("aiohttp", "tyqw"):
                m = imports["modules"].get(mod, {})
                lines.append(
                    f"| {mod} | {_fmt(m.get('importtime_ms'))} | {_fmt(m.get('wall_ms'))} |"
                )
            lines.append(
                f"| tyqw - aiohttp | {_fmt(imports.get('delta_ms'))} | "
                f"{_fmt(imports.get('delta_wall_ms'))} |"
            )
    lines += ["", "## Harness health", ""]
    lines += [
        "Server CPU per event (warm-up included) and the client's CPU/wall during the "
        "measurement; a client near 1.0 was never waiting on the server.",
        "",
        "| scenario | floor CPU/wall | floor µs/event | server µs/event (max over clients) |",
        "|---|--:|--:|--:|",
    ]
    for name in scenario_names:
        util = summary.median(name, FLOOR, "cpu_util")
        floor_cost = summary.median(name, FLOOR, "cpu_us_per_event")
        server = [v for c in clients if (v := summary.median(name, c, "server_cpu_us_per_event"))]
        worst = max(server) if server else None
        lines.append(f"| {name} | {_fmt(util, 2)} | {_fmt(floor_cost)} | {_fmt(worst)} |")
    problems = [
        r
        for runs in summary.by.values()
        for r in runs
        if r["status"] in ("error", "fails", "unavailable")
    ]
    if problems:
        lines += ["", "## Failures", ""]
        seen = set()
        for r in problems:
            key = (r["client"], r["scenario"], r.get("error", ""))
            if key in seen:
                continue
            seen.add(key)
            expected = " (expected)" if r.get("expected_failure") else ""
            lines.append(
                f"- {r['client']} / {r['scenario']}: {r['status']}{expected}: "
                f"`{(r.get('error') or '').strip()[:300]}`"
            )
    for client, text in profiles.items():
        lines += ["", f"## Profile: {client}", "", "```", text.rstrip(), "```"]
    return "\n".join(lines) + "\n"


def _fmt(value: float | None, digits: int = 1) -> str:
    return "—" if value is None else f"{value:,.{digits}f}"


def chart(summary: Summary, clients: list[str], path: Path, quick: bool) -> None:
    """Bars of CPU per event per client for the per-event scenarios."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series = [
        ("single", "1 stream, one write per event"),
        ("flat", "1 stream, written in one go"),
        ("concurrent", "concurrent streams"),
    ]
    width = 0.8 / len(series)
    fig, ax = plt.subplots(figsize=(max(8, 1.1 * len(clients) + 2), 5), dpi=110)
    for i, (scenario, label) in enumerate(series):
        xs, ys, notes = [], [], []
        for j, c in enumerate(clients):
            x = j + (i - (len(series) - 1) / 2) * width
            v = summary.median(scenario, c, "cpu_us_per_event")
            if v is None:
                status = summary.status(scenario, c)
                if status != "not run":
                    ax.annotate(
                        status,
                        (x, 0.02),
                        xycoords=("data", "axes fraction"),
                        ha="center",
                        va="bottom",
                        fontsize=7,
                        rotation=90,
                    )
                continue
            xs.append(x)
            ys.append(v)
            r = summary.ratio(scenario, c, "cpu_us_per_event")
            notes.append("" if c == FLOOR or r is None else f"{r:.1f}x")
        bars = ax.bar(xs, ys, width, label=label)
        for bar, note in zip(bars, notes, strict=True):
            if note:
                ax.annotate(
                    note,
                    (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                    ha="center",
                    va="bottom",
                    fontsize=7,
                )
    floor = summary.median("single", FLOOR, "cpu_us_per_event")
    if floor is not None:
        ax.axhline(floor * 1.25, color="grey", linestyle="--", linewidth=1)
        ax.annotate(
            "1.25x floor (1 stream)",
            (-0.5, floor * 1.25),
            ha="left",
            va="bottom",
            fontsize=7,
            color="grey",
        )
    ax.set_yscale("log")
    ax.set_ylim(bottom=1)
    ax.set_xticks(range(len(clients)), clients, rotation=20, ha="right")
    ax.set_ylabel("client CPU per event (µs, log scale), lower is better")
    title = "tyqw vs peers: CPU per SSE event (ratio to the floor above bars)"
    ax.set_title(title + (" [QUICK: not meaningful]" if quick else ""))
    ax.legend()
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
