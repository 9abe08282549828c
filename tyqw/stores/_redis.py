"""``RedisStore``: conversations shared by every worker, on any number of machines.

Keys of one conversation (``<key>`` is ``sha256(app_id NUL name)[:32]``)::

    <prefix>{<key>}:record     the record as JSON, with its app_id and name; PX ttl
    <prefix>{<key>}:lock       a lease: a random token, PX lease, renewed while held
    <prefix>{<key>}:transcript the transcript: a list of JSON entries, capped; PX ttl

The ``{...}`` hash tag puts all three on one Redis Cluster shard, so each script below
touches one slot. A turn costs two round trips: one script takes the lease and reads
the record, one writes the record (refreshing its TTL), appends the turn's exchange to
the transcript when one is kept, and releases the lease, and writes only while the
lease is still this turn's.

A call that fails with a connection error is made once more: a pooled connection may
be one the server has closed (a restart, a failover, an idle timeout), and redis-py
finds that out only by using it. Every call is safe to repeat, the scripts included:
a repeated script sees what its first run did (its own lease, its own record) and
answers as that run did. Requires ``tyqw[redis]``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
import urllib.parse
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar, cast

import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError

from .._exceptions import StoreError
from .._scrub import scrub_chain
from ._record import conversation_key, decode, encode, to_utf8_json

if TYPE_CHECKING:
    from redis.asyncio import Redis, RedisCluster

__all__ = ["RedisStore"]

logger = logging.getLogger("tyqw")

_T = TypeVar("_T")

_FIRST_WAIT = 0.002
_LONGEST_WAIT = 0.05

# KEYS: lock, record. ARGV: token, lease ms. -> {1, record or nil} or {0, lock's PTTL}
# The record is read first: a script that fails (a record key of the wrong type) keeps
# what it already wrote, so it must fail before it takes the lease.
# A lease that already holds this token was granted by a run whose answer was lost.
_BEGIN = """
local record = redis.call('GET', KEYS[2])
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2])
    or redis.call('GET', KEYS[1]) == ARGV[1] then
  return {1, record}
end
return {0, redis.call('PTTL', KEYS[1])}
"""
# The end of a turn whose lease is known to be its own: write the record (ARGV[2] 'set')
# or delete it, then release the lease. Shared by _END and _END_APPENDING.
_WRITE_AND_RELEASE = """if ARGV[2] == 'set' then
  if ARGV[4] == '0' then
    redis.call('SET', KEYS[2], ARGV[3])
  else
    redis.call('SET', KEYS[2], ARGV[3], 'PX', ARGV[4])
  end
else
  redis.call('DEL', KEYS[2])
end
redis.call('DEL', KEYS[1])
"""
# KEYS: lock, record. ARGV: token, 'set' or 'delete', record, ttl ms (0: none).
# -> 1, or 0 when the lease was no longer this token's (then nothing is written), unless
# the record is already what this call writes (a run whose answer was lost wrote it).
_END = (
    """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  if ARGV[2] == 'set' and redis.call('GET', KEYS[2]) == ARGV[3] then return 1 end
  if ARGV[2] == 'delete' and redis.call('EXISTS', KEYS[2]) == 0 then return 1 end
  return 0
end
"""
    + _WRITE_AND_RELEASE
    + "return 1\n"
)
# _END that also appends a transcript entry: one round trip where a turn kept its
# exchange in a call of its own. KEYS: lock, record, transcript. ARGV: as _END's, then
# entry, keep. -> as _END, or 2: the record was written and the lease released, but the
# entry could not be appended (the transcript key holds another type). The lease is
# checked first, so a turn whose lease was lost appends nothing; a repeated run (its
# first answer lost) appends nothing again: it finds its record and its entry last.
_END_APPENDING = (
    """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  if (ARGV[2] == 'set' and redis.call('GET', KEYS[2]) == ARGV[3])
      or (ARGV[2] == 'delete' and redis.call('EXISTS', KEYS[2]) == 0) then
    local last = redis.pcall('LINDEX', KEYS[3], -1)
    if last == ARGV[5] then return 1 end
    if type(last) == 'table' and last.err then return 2 end
  end
  return 0
end
"""
    + _WRITE_AND_RELEASE
    + """local pushed = redis.pcall('RPUSH', KEYS[3], ARGV[5])
if type(pushed) == 'table' and pushed.err then return 2 end
redis.call('LTRIM', KEYS[3], -tonumber(ARGV[6]), -1)
if ARGV[4] ~= '0' then redis.call('PEXPIRE', KEYS[3], ARGV[4]) end
return 1
"""
)
# KEYS: lock. ARGV: token, lease ms. -> 1 if renewed, 0 if the lease is gone.
_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""
# KEYS: lock. ARGV: token. Compare and delete: never another holder's lease.
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""

# KEYS: transcript. ARGV: entry, keep, ttl ms (0: none). Append, cap, and restart the TTL
# in one step: a reader never sees the list over its cap or without its TTL.
_APPEND = """
redis.call('RPUSH', KEYS[1], ARGV[1])
redis.call('LTRIM', KEYS[1], -tonumber(ARGV[2]), -1)
if ARGV[3] ~= '0' then redis.call('PEXPIRE', KEYS[1], ARGV[3]) end
return 1
"""


async def _again(call: Callable[[], Awaitable[_T]]) -> _T:
    """``call()``, made once more if it fails with a connection error (a pooled
    connection the server had closed; the failed one is dropped and a new one dialled)."""
    try:
        return await call()
    except RedisConnectionError:
        return await call()


class _Lease:
    """One holding of a conversation's lock, and the one judge of whether it still holds.

    ``proven_until`` is the loop time up to which the lease is surely this holder's: the
    moment the last granting or renewing call was sent, plus the lease (Redis starts the
    lease when it runs the call, which is later). A holder that cannot prove more before
    ``proven_until - lease / 6`` gives the lease up as lost: its turn stops while the lease
    is still its own, so no other worker's turn of the conversation can overlap it.
    """

    __slots__ = (
        "lock_key",
        "lost",
        "on_lost_callback",
        "proven_until",
        "record_key",
        "renewer",
        "token",
    )

    def __init__(self, lock_key: str, record_key: str) -> None:
        self.lock_key = lock_key
        self.record_key = record_key
        self.token = secrets.token_hex(16)
        self.renewer: asyncio.Task[None] | None = None
        self.proven_until = 0.0
        self.lost: str | None = None  # why the lease is no longer proven this holder's
        self.on_lost_callback: Callable[[StoreError], object] | None = None

    def on_lost(self, callback: Callable[[StoreError], object]) -> None:
        """``TurnLock.on_lost()``: ``callback`` is told of a loss, at once if it happened."""
        if self.lost is not None:
            callback(self.lost_error())
        else:
            self.on_lost_callback = callback

    def lost_error(self) -> StoreError:
        return StoreError(f"RedisStore: the conversation's lock was lost ({self.lost})")


def _where(url: str) -> str:
    """The URL without user, password, path or query: safe for a message."""
    try:
        parts = urllib.parse.urlsplit(url)
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return "(unparsable)"
    return f"{parts.scheme}://{host}{port}"


# A week: a user who comes back within it finds the conversation (its transcript is
# resent once the service has forgotten the id); longer costs memory for idle users.
DEFAULT_TTL = 7 * 24 * 3600.0


class RedisStore:
    """Conversations in Redis, shared by every worker and machine that uses it.

    ``ttl`` (seconds, default a week) is refreshed on every write; ``None`` keeps records
    forever. It outlives the service's own hour on purpose: a conversation the service
    has forgotten is continued from its transcript (see ``Session(expiry=...)``). The lock
    is a lease of ``lease`` seconds, renewed every ``lease / 3`` while held: a worker
    killed while holding it blocks its conversation until the lease expires, and a
    holder that cannot renew it in time stops its turn before it can expire (see
    ``TurnLock.on_lost``). Every failure is a ``StoreError`` with redis-py's exception
    as ``__cause__``.

    Example::

        store = RedisStore.from_url("redis://:password@redis.internal:6379/0")
        async with Session(app_id, name=user_id, store=store) as session:
            await session.send("你好")
        await store.aclose()
    """

    def __init__(
        self,
        client: Redis | RedisCluster,
        *,
        key_prefix: str = "tyqw:",
        ttl: float | None = DEFAULT_TTL,
        lease: float = 30.0,
    ) -> None:
        if not isinstance(key_prefix, str) or "{" in key_prefix or "}" in key_prefix:
            raise ValueError("key_prefix must be a string without '{' or '}'")
        if ttl is not None and not ttl > 0:
            raise ValueError("ttl must be > 0 seconds, or None")
        if not lease >= 0.01:
            raise ValueError("lease must be at least 0.01 seconds")
        self.key_prefix = key_prefix
        self.ttl = ttl
        self.lease = lease
        # Any: redis-py's own annotations differ between the versions tyqw supports.
        self._client: Any = cast(Any, client)
        self._owns_client = False
        self._closed = False
        self._lease_ms = max(1, round(lease * 1000))
        self._ttl_ms = 0 if ttl is None else max(1, round(ttl * 1000))
        self._begin = self._client.register_script(_BEGIN)
        self._end = self._client.register_script(_END)
        self._end_appending = self._client.register_script(_END_APPENDING)
        self._renew = self._client.register_script(_RENEW)
        self._release = self._client.register_script(_RELEASE)
        self._append = self._client.register_script(_APPEND)
        self._releasing: set[asyncio.Task[None]] = set()

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        key_prefix: str = "tyqw:",
        ttl: float | None = DEFAULT_TTL,
        lease: float = 30.0,
        **client_options: Any,
    ) -> RedisStore:
        """A store with its own client: ``redis://[[user]:password@]host[:port][/db]``,
        ``rediss://`` for TLS, ``unix://``; other keywords go to redis-py's connection
        pool (``ssl_ca_certs=``, ``max_connections=``...). ``aclose()`` closes it.

        The pool is a ``BlockingConnectionPool`` (50 connections unless
        ``max_connections=`` says otherwise): under a burst of turns a request waits for
        a free connection (up to ``timeout=``, 20 s) instead of failing.

        Example::

            store = RedisStore.from_url("rediss://:pw@redis.example.com:6380/2", ttl=1800)
        """
        client_options.setdefault("socket_timeout", 5.0)
        client_options.setdefault("socket_connect_timeout", 5.0)
        problem = None
        try:
            pool = cast(Any, aioredis.BlockingConnectionPool).from_url(url, **client_options)
            client = aioredis.Redis(connection_pool=pool)
        except Exception as exc:  # the message may quote the URL: keep it out of the chain
            problem = type(exc).__name__
        if problem is not None:
            raise ValueError(
                f"invalid Redis URL {_where(url)} ({problem}): expected "
                "redis://[[user]:password@]host[:port][/db], rediss://... or unix://..."
            )
        store = cls(client, key_prefix=key_prefix, ttl=ttl, lease=lease)
        store._owns_client = True
        return store

    def __repr__(self) -> str:
        return f"<RedisStore key_prefix={self.key_prefix!r} ttl={self.ttl} lease={self.lease}>"

    def _keys(self, app_id: str, name: str) -> tuple[str, str]:
        base = f"{self.key_prefix}{{{conversation_key(app_id, name)}}}"
        return f"{base}:record", f"{base}:lock"

    def _failed(self, action: str, exc: BaseException) -> StoreError:
        return StoreError(f"RedisStore: cannot {action} ({type(exc).__name__}: {exc})")

    def _check_open(self) -> None:
        if self._closed:
            raise StoreError("RedisStore: used after aclose()")

    def _parse(self, app_id: str, name: str, value: bytes | str | None) -> dict[str, Any] | None:
        if value is None:
            return None
        decoded = decode(value)
        if isinstance(decoded, str) or decoded[:2] != (app_id, name):
            why = decoded if isinstance(decoded, str) else "another conversation's record"
            logger.warning(
                "tyqw: ignoring the damaged Redis record of %r (%s); the conversation starts anew",
                name,
                why,
            )
            return None
        return decoded[2]

    def _encode(self, app_id: str, name: str, record: dict[str, Any]) -> bytes:
        try:
            return encode(app_id, name, record)
        except ValueError as exc:
            raise StoreError(f"RedisStore: cannot store this record ({exc})") from None

    # -- records -------------------------------------------------------------------------

    async def get(self, app_id: str, name: str) -> dict[str, Any] | None:
        """The record of ``(app_id, name)``, or ``None``."""
        self._check_open()
        record_key, _ = self._keys(app_id, name)
        try:
            value = await _again(lambda: self._client.get(record_key))
        except Exception as exc:
            raise self._failed("read a conversation", exc) from scrub_chain(exc)
        return self._parse(app_id, name, value)

    async def set(self, app_id: str, name: str, record: dict[str, Any]) -> None:
        """Replace the record and restart its TTL."""
        self._check_open()
        record_key, _ = self._keys(app_id, name)
        data = self._encode(app_id, name, record)
        try:
            await _again(lambda: self._client.set(record_key, data, px=self._ttl_ms or None))
        except Exception as exc:
            raise self._failed("write a conversation", exc) from scrub_chain(exc)

    async def delete(self, app_id: str, name: str) -> None:
        """Forget the record."""
        self._check_open()
        record_key, _ = self._keys(app_id, name)
        try:
            await _again(lambda: self._client.delete(record_key))
        except Exception as exc:
            raise self._failed("delete a conversation", exc) from scrub_chain(exc)

    # -- the transcript ------------------------------------------------------------------

    def _transcript_key(self, app_id: str, name: str) -> str:
        return f"{self.key_prefix}{{{conversation_key(app_id, name)}}}:transcript"

    async def append_transcript(
        self, app_id: str, name: str, entry: dict[str, Any], keep: int
    ) -> None:
        """Append ``entry`` to the conversation's list, trim it to the ``keep`` most
        recent and restart its TTL (the record's), in one script call."""
        self._check_open()
        try:
            data = to_utf8_json(entry)
        except (TypeError, ValueError, RecursionError) as exc:
            raise StoreError(f"RedisStore: cannot store this entry ({exc})") from None
        keys, args = [self._transcript_key(app_id, name)], [data, keep, self._ttl_ms]
        try:
            # Not repeated after a connection error: a lost answer may hide an append
            # that was made, and a second one would be a duplicate.
            await self._append(keys=keys, args=args)
        except Exception as exc:
            raise self._failed("append to a transcript", exc) from exc

    async def read_transcript(self, app_id: str, name: str) -> list[dict[str, Any]]:
        """The conversation's list, oldest first; a damaged entry is skipped."""
        self._check_open()
        key = self._transcript_key(app_id, name)
        try:
            values = await _again(lambda: self._client.lrange(key, 0, -1))
        except Exception as exc:
            raise self._failed("read a transcript", exc) from exc
        entries = []
        for value in values:
            try:
                entry = json.loads(value)
            except (ValueError, RecursionError):
                entry = None
            if isinstance(entry, dict):
                entries.append(entry)
            else:
                logger.warning("tyqw: skipping a damaged transcript entry of %r", name)
        return entries

    async def delete_transcript(self, app_id: str, name: str) -> None:
        """Forget the conversation's list."""
        self._check_open()
        key = self._transcript_key(app_id, name)
        try:
            await _again(lambda: self._client.delete(key))
        except Exception as exc:
            raise self._failed("delete a transcript", exc) from exc

    # -- the lease -----------------------------------------------------------------------

    async def _take(self, lease: _Lease, *, read: bool) -> bytes | str | None:
        """Poll until the lease is ours; with ``read``, the record in the same call."""
        self._check_open()
        loop = asyncio.get_running_loop()
        wait = _FIRST_WAIT
        keys, args = [lease.lock_key, lease.record_key], [lease.token, self._lease_ms]
        while True:
            sent = loop.time()
            try:
                got, value = await _again(lambda: self._begin(keys=keys, args=args))
            except BaseException as exc:
                # The server may have granted the lease before the call failed (an answer
                # slower than the socket timeout, a cancelled wait): give it back, or the
                # conversation stays locked for the whole lease.
                self._release_later(lease)
                if isinstance(exc, Exception):
                    raise self._failed("lock a conversation", exc) from scrub_chain(exc)
                raise
            if got:
                lease.proven_until = sent + self.lease
                lease.renewer = asyncio.create_task(self._keep(lease))
                return value if read else None
            remaining = value / 1000 if isinstance(value, int) and value > 0 else wait
            await asyncio.sleep(min(wait, remaining))
            wait = min(wait * 2, _LONGEST_WAIT)

    async def _keep(self, lease: _Lease) -> None:
        """Renew the lease a third of the way through; after a failed renewal, again
        soon; give it up as lost when it can no longer be proven in time (see _Lease)."""
        loop = asyncio.get_running_loop()
        keys, args = [lease.lock_key], [lease.token, self._lease_ms]
        margin, retry = self.lease / 6, min(self.lease / 12, 1.0)
        wait = self.lease / 3
        while True:
            await asyncio.sleep(wait)
            sent = loop.time()
            cutoff = lease.proven_until - margin
            try:
                if sent >= cutoff:
                    raise asyncio.TimeoutError
                renewed = await asyncio.wait_for(
                    _again(lambda: self._renew(keys=keys, args=args)), cutoff - sent
                )
            except Exception as exc:
                scrub_chain(exc)
                if loop.time() < cutoff:
                    logger.debug("tyqw: cannot renew a conversation lock in Redis: %r", exc)
                    wait = min(retry, cutoff - loop.time())
                    continue
                self._lose(
                    lease, f"Redis did not confirm its renewal within {self.lease * 5 / 6:g}s"
                )
                return
            if not renewed:
                self._lose(lease, f"it expired while it was held (lease {self.lease:g}s)")
                return
            lease.proven_until = sent + self.lease
            wait = self.lease / 3

    def _lose(self, lease: _Lease, why: str) -> None:
        lease.lost = why
        logger.warning("tyqw: a conversation lock in Redis was lost: %s", why)
        callback, lease.on_lost_callback = lease.on_lost_callback, None
        if callback is not None:
            callback(lease.lost_error())

    def _stop(self, lease: _Lease) -> None:
        if lease.renewer is not None:
            lease.renewer.cancel()
            lease.renewer = None

    async def _give_back(self, lease: _Lease) -> None:
        self._stop(lease)
        try:
            await _again(lambda: self._release(keys=[lease.lock_key], args=[lease.token]))
        except Exception as exc:
            raise self._failed("release a conversation lock", exc) from scrub_chain(exc)

    def _release_later(self, lease: _Lease) -> None:
        """Release in the background (after a cancellation): best effort, the lease
        expires anyway."""
        self._stop(lease)

        async def release() -> None:
            with contextlib.suppress(Exception):
                await _again(lambda: self._release(keys=[lease.lock_key], args=[lease.token]))

        task = asyncio.get_running_loop().create_task(release())
        self._releasing.add(task)
        task.add_done_callback(self._releasing.discard)

    @contextlib.asynccontextmanager
    async def lock(self, app_id: str, name: str) -> AsyncIterator[None]:
        """The conversation's lease, for every worker on every machine."""
        record_key, lock_key = self._keys(app_id, name)
        lease = _Lease(lock_key, record_key)
        await self._take(lease, read=False)
        try:
            yield
        except BaseException:
            with contextlib.suppress(StoreError):
                await self._give_back(lease)
            raise
        await self._give_back(lease)

    # -- one round trip each (TurnStore) ---------------------------------------------

    async def begin_turn(self, app_id: str, name: str) -> tuple[object, dict[str, Any] | None]:
        """Take the lease and read the record, in one script call."""
        record_key, lock_key = self._keys(app_id, name)
        lease = _Lease(lock_key, record_key)
        value = await self._take(lease, read=True)
        return lease, self._parse(app_id, name, value)

    async def end_turn(
        self, held: object, app_id: str, name: str, record: dict[str, Any] | None
    ) -> None:
        """Write the record (``None``: delete it) and release, in one script call;
        nothing is written if the lease expired meanwhile (a ``StoreError``)."""
        await self._end_turn(held, app_id, name, record, None)

    async def end_turn_appending(
        self,
        held: object,
        app_id: str,
        name: str,
        record: dict[str, Any] | None,
        entry: dict[str, Any],
        keep: int,
    ) -> str | None:
        """``end_turn()`` that also appends ``entry`` to the transcript, trims it to the
        ``keep`` most recent and restarts its TTL, in the same script call: a turn that
        keeps its exchange costs one round trip, not two.

        Nothing is written if the lease expired meanwhile (a ``StoreError``), the entry
        included. When only the entry could not be kept (it is not JSON, or the
        transcript's key holds another type) the record is written and the lease
        released all the same, and the reason is returned; ``None`` when all is done.

        Example::

            held, record = await store.begin_turn(app_id, name)
            ...  # the turn
            why = await store.end_turn_appending(
                held, app_id, name, new_record, exchange.to_dict(), 200
            )
        """
        try:
            data = to_utf8_json(entry)
        except (TypeError, ValueError, RecursionError) as exc:
            await self._end_turn(held, app_id, name, record, None)
            return f"the entry is not JSON ({type(exc).__name__}: {exc})"
        if await self._end_turn(held, app_id, name, record, (data, keep)) == 2:
            return "the transcript's key holds another type"
        return None

    async def _end_turn(
        self,
        held: object,
        app_id: str,
        name: str,
        record: dict[str, Any] | None,
        append: tuple[bytes, int] | None,
    ) -> int:
        assert isinstance(held, _Lease)
        self._stop(held)
        if held.lost is not None:
            # Its holder stopped the turn: the lease may still be ours, but Redis may be
            # away, and a write it cannot prove is refused (the fencing below would too).
            self._release_later(held)
            raise StoreError(f"{held.lost_error()}; its record was not written")
        try:
            data = b"" if record is None else self._encode(app_id, name, record)
        except StoreError:
            self._release_later(held)
            raise
        mode = "delete" if record is None else "set"
        keys: list[str] = [held.lock_key, held.record_key]
        args: list[object] = [held.token, mode, data, self._ttl_ms]
        script = self._end
        if append is not None:
            keys.append(self._transcript_key(app_id, name))
            args += append
            script = self._end_appending
        try:
            done = await _again(lambda: script(keys=keys, args=args))
        except asyncio.CancelledError:
            self._release_later(held)
            raise
        except Exception as exc:
            self._release_later(held)
            raise self._failed("save a conversation", exc) from scrub_chain(exc)
        if not done:
            raise StoreError(
                "RedisStore: the conversation's lock expired before the turn ended "
                f"(lease {self.lease} s); its record was not written"
            )
        return int(done)

    # -- listing and lifetime ------------------------------------------------------------

    async def conversations(
        self, app_id: str | None = None
    ) -> AsyncIterator[tuple[str, str, dict[str, Any]]]:
        """Every stored conversation (of ``app_id``), by ``SCAN``: for the CLI, not hot paths."""
        self._check_open()
        escaped = "".join(f"\\{c}" if c in "*?[]\\" else c for c in self.key_prefix)
        try:
            async for key in self._client.scan_iter(match=f"{escaped}{{*}}:record", count=500):
                value = await self._client.get(key)
                if value is None:
                    continue
                decoded = decode(value)
                if isinstance(decoded, str):
                    continue
                stored_app_id, stored_name, record = decoded
                if app_id is not None and stored_app_id != app_id:
                    continue
                text_key = key.decode() if isinstance(key, bytes) else key
                if text_key != self._keys(stored_app_id, stored_name)[0]:
                    continue
                yield stored_app_id, stored_name, record
        except StoreError:
            raise
        except Exception as exc:
            raise self._failed("list conversations", exc) from scrub_chain(exc)

    async def aclose(self) -> None:
        """Finish background releases; close the client if ``from_url`` made it."""
        if self._closed:
            return
        self._closed = True
        if self._releasing:
            await asyncio.wait(set(self._releasing), timeout=min(self.lease, 5.0))
        if self._owns_client:
            close = getattr(self._client, "aclose", None) or self._client.close
            await close()
            await self._client.connection_pool.disconnect()
