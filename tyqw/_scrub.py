"""Taking what is secret out of a third-party exception before tyqw chains it.

Error reporters (Sentry and the like) record an exception's chain with every frame's
local variables: a client library's frames hold its credentials there (redis-py's
``auth_args``, aiohttp's request headers). tyqw's own errors carry nothing secret, so
every foreign exception tyqw chains as a cause loses its traceback first.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from ._exceptions import TyqwError

__all__ = ["scrub_chain"]


def scrub_chain(exc: BaseException, clean: Callable[[Any], Any] | None = None) -> BaseException:
    """Drop the traceback of ``exc`` and of every foreign exception chained to it, and
    pass their ``args`` and attributes through ``clean`` (which returns a value as it
    is, or a copy without its secrets); returns ``exc``.

    Example::

        except redis.exceptions.RedisError as exc:
            raise StoreError("RedisStore: cannot read") from scrub_chain(exc)
    """
    seen: set[int] = set()
    pending: list[BaseException] = [exc]
    while pending:
        error = pending.pop()
        if id(error) in seen:
            continue
        seen.add(id(error))
        if not isinstance(error, (TyqwError, asyncio.CancelledError)):
            error.__traceback__ = None
            if clean is not None:
                error.args = tuple(clean(arg) for arg in error.args)
                for name, value in list(getattr(error, "__dict__", {}).items()):
                    cleaned = clean(value)
                    if cleaned is not value:
                        setattr(error, name, cleaned)
        pending.extend(e for e in (error.__cause__, error.__context__) if e is not None)
    return exc
