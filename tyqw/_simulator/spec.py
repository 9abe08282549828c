"""The ``--fault SPEC`` language of ``tyqw simulate``: one spec, one :class:`Fault`.

``KIND[:ARGS][@AFTER][xTIMES]``: the kind and its arguments map onto the ``Fault``
constructors, ``@N`` is ``after=N`` (the events sent before it strikes) and ``xN``
queues it for the next N requests. :data:`SPEC_HELP` is the table ``--help`` shows.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable

from .faults import Fault

SPEC_HELP = """\
fault specs, KIND[:ARGS][@AFTER][xTIMES] (each --fault is queued for the next requests):
  http:STATUS[,CODE[,MESSAGE]]       an HTTP error with a DashScope body; options
                                     retry-after=SECONDS, retry-after-ms=MS
  error[:STATUS[,CODE[,MESSAGE]]]    an event:error frame (default 500) ending the stream
  cut[:AFTER]                        the TCP connection dropped
  truncate[:AFTER]                   the body ends without the final event
  stall:SECONDS[,keepalive=SECONDS]  silence (or only keep-alive comments), then the rest
  drip[:AFTER]                       the rest of the stream one byte at a time
  malformed[:AFTER]                  one extra event whose data is not JSON
  oversized:BYTES                    one extra event BYTES long
  html[:STATUS]                      a proxy's HTML page instead of the API (default 200)
  headers-stall:SECONDS              nothing at all, not even headers, then the answer
  @AFTER strikes after that many events (default 0); xTIMES repeats it (default 1)
examples: http:429x2  http:429,retry-after=1  error:400,DataInspectionFailed@2  cut:3
          stall:5@2  stall:30,keepalive=1@1  html:502"""

_Maker = Callable[[list[str], dict[str, str], int | None], Fault]

_TIMES = re.compile(r"x(\d+)\Z")
_AFTER = re.compile(r"@([^@]*)\Z")
_COUNT = re.compile(r"\d{1,9}")


def parse_fault_spec(spec: str) -> tuple[Fault, int]:
    """The fault a spec names and how many requests it is for; ValueError says why not.

    For example::

        parse_fault_spec("http:429x2")  # (Fault.http(429), 2)
        parse_fault_spec("stall:5@2")   # (Fault.stall(5, after=2), 1)
    """
    rest = spec.strip()
    times = 1
    if match := _TIMES.search(rest):
        times = int(match.group(1))
        if times < 1:
            raise ValueError("xTIMES must be at least x1")
        rest = rest[: match.start()]
    after: int | None = None
    if match := _AFTER.search(rest):
        after = _count(match.group(1), "@AFTER")
        rest = rest[: match.start()]
    kind, colon, text = rest.partition(":")
    make = _KINDS.get(kind.strip().lower())
    if make is None:
        known = ", ".join(_KINDS)
        raise ValueError(f"unknown fault kind {kind.strip()!r} (one of {known})")
    args = text.split(",") if colon else []
    positional = [a for a in args if "=" not in a]  # raw: a message keeps its spaces
    options = dict(_option(a) for a in args if "=" in a)
    return make(positional, options, after), times


def _option(arg: str) -> tuple[str, str]:
    name, _, value = arg.partition("=")
    return name.strip().lower(), value.strip()


def _count(text: str, what: str) -> int:
    if not _COUNT.fullmatch(text.strip()):
        raise ValueError(f"{what} must be a whole number, not {text!r}")
    return int(text)


def _seconds(text: str, what: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"{what} must be a number of seconds, not {text!r}") from None
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{what} must be a number of seconds >= 0, not {text!r}")
    return value


def _status(text: str) -> int:
    status = _count(text, "STATUS")
    if not 100 <= status <= 599:
        raise ValueError(f"STATUS must be an HTTP status (100-599), not {status}")
    return status


def _no_options(kind: str, options: dict[str, str], allowed: tuple[str, ...] = ()) -> None:
    extra = sorted(set(options) - set(allowed))
    if extra:
        raise ValueError(f"{kind} takes no option {extra[0]!r}")


def _at_most(kind: str, positional: list[str], count: int) -> None:
    if len(positional) > count:
        raise ValueError(f"{kind} takes at most {count} argument(s), got {len(positional)}")


def _no_after(kind: str, after: int | None) -> None:
    if after is not None:
        raise ValueError(f"{kind} strikes before any event: it takes no @AFTER")


def _error_args(positional: list[str]) -> tuple[str | None, str | None]:
    code = positional[1].strip() if len(positional) > 1 else ""
    message = ",".join(positional[2:]).strip()  # a message may hold commas
    return code or None, message or None


def _http(positional: list[str], options: dict[str, str], after: int | None) -> Fault:
    _no_options("http", options, ("retry-after", "retry-after-ms"))
    _no_after("http", after)
    if not positional or not positional[0].strip():
        raise ValueError("http needs a STATUS, e.g. http:429")
    code, message = _error_args(positional)
    retry = options.get("retry-after")
    retry_ms = options.get("retry-after-ms")
    return Fault.http(
        _status(positional[0]),
        code,
        message,
        retry_after=None if retry is None else _seconds(retry, "retry-after"),
        retry_after_ms=None if retry_ms is None else _seconds(retry_ms, "retry-after-ms"),
    )


def _error(positional: list[str], options: dict[str, str], after: int | None) -> Fault:
    _no_options("error", options)
    status = _status(positional[0]) if positional and positional[0].strip() else 500
    code, message = _error_args(positional)
    return Fault.stream_error(after=after or 0, status=status, code=code, message=message)


def _after_only(kind: str, build: Callable[..., Fault]) -> _Maker:
    def make(positional: list[str], options: dict[str, str], after: int | None) -> Fault:
        _no_options(kind, options)
        _at_most(kind, positional, 1)
        if positional and after is not None:
            raise ValueError(f"{kind}: give AFTER once, as {kind}:N or {kind}@N")
        if positional:
            after = _count(positional[0], "AFTER")
        return build() if after is None else build(after=after)

    return make


def _stall(positional: list[str], options: dict[str, str], after: int | None) -> Fault:
    _no_options("stall", options, ("keepalive",))
    _at_most("stall", positional, 1)
    if not positional:
        raise ValueError("stall needs SECONDS, e.g. stall:5")
    keepalive = options.get("keepalive")
    return Fault.stall(
        _seconds(positional[0], "SECONDS"),
        after=after or 0,
        keepalive=None if keepalive is None else _seconds(keepalive, "keepalive"),
    )


def _oversized(positional: list[str], options: dict[str, str], after: int | None) -> Fault:
    _no_options("oversized", options)
    _at_most("oversized", positional, 1)
    if not positional:
        raise ValueError("oversized needs BYTES, e.g. oversized:1048576")
    return Fault.oversized(_count(positional[0], "BYTES"), after=after or 0)


def _html(positional: list[str], options: dict[str, str], after: int | None) -> Fault:
    _no_options("html", options)
    _no_after("html", after)
    _at_most("html", positional, 1)
    status = _status(positional[0]) if positional else 200
    return Fault.content_type(status=status)


def _headers_stall(positional: list[str], options: dict[str, str], after: int | None) -> Fault:
    _no_options("headers-stall", options)
    _no_after("headers-stall", after)
    _at_most("headers-stall", positional, 1)
    if not positional:
        raise ValueError("headers-stall needs SECONDS, e.g. headers-stall:30")
    return Fault.headers_stall(_seconds(positional[0], "SECONDS"))


_KINDS: dict[str, _Maker] = {
    "http": _http,
    "error": _error,
    "cut": _after_only("cut", Fault.cut),
    "truncate": _after_only("truncate", Fault.truncate),
    "stall": _stall,
    "drip": _after_only("drip", Fault.drip),
    "malformed": _after_only("malformed", Fault.malformed),
    "oversized": _oversized,
    "html": _html,
    "headers-stall": _headers_stall,
}
