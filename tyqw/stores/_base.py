"""The store interface, and the two calls a turn makes on any store.

A ``Store`` is five async methods and a lock; that is all a user writes for SQL or
anything else. ``begin_turn`` and ``end_turn`` run a turn's store work with the
primitives, or with a store's own one-round-trip versions when it has them
(``TurnStore``).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from typing import Any, Protocol, TypeGuard, cast, final, runtime_checkable

from .._exceptions import StoreError, TyqwError
from .._history import Exchange

__all__ = [
    "KEEP",
    "LocalStore",
    "Store",
    "TranscriptStore",
    "TurnLock",
    "TurnStore",
    "begin_turn",
    "end_turn",
    "forget",
    "read_history",
]

logger = logging.getLogger("tyqw")


class _Keep:
    """The ``record`` of an ``end_turn()`` that writes nothing and only releases."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "KEEP"


KEEP = _Keep()


@runtime_checkable
class Store(Protocol):
    """Where conversation state lives, keyed by ``(app_id, name)``.

    A record is a small JSON-compatible dict that tyqw owns: ``"session_id"`` (a
    non-empty ``str``), ``"usage"`` (``{model_id: {"input_tokens": int,
    "output_tokens": int}}``) and ``"updated_at"`` (a float unix time). A store keeps it
    as it is; only listing reads ``"session_id"`` and ``"updated_at"``.

    Example, a store in a dict (``MemoryStore`` is this, done with care)::

        class DictStore:
            def __init__(self) -> None:
                self.records: dict[tuple[str, str], dict[str, Any]] = {}
                self.locks: collections.defaultdict[tuple[str, str], asyncio.Lock] = (
                    collections.defaultdict(asyncio.Lock))
            async def get(self, app_id, name): return self.records.get((app_id, name))
            async def set(self, app_id, name, record): self.records[app_id, name] = record
            async def delete(self, app_id, name): self.records.pop((app_id, name), None)
            def lock(self, app_id, name): return self.locks[app_id, name]
            async def conversations(self, app_id=None):
                for (a, n), record in list(self.records.items()):
                    if app_id in (None, a): yield a, n, record
            async def aclose(self): pass
    """

    async def get(self, app_id: str, name: str) -> dict[str, Any] | None:
        """The record of ``(app_id, name)``, or ``None`` if there is none."""
        ...

    async def set(self, app_id: str, name: str, record: dict[str, Any]) -> None:
        """Replace the record atomically: a reader sees the old one or the new one."""
        ...

    async def delete(self, app_id: str, name: str) -> None:
        """Forget the record (nothing happens if there is none)."""
        ...

    def lock(self, app_id: str, name: str) -> AbstractAsyncContextManager[object]:
        """Exclusive access to ``(app_id, name)`` for every Session using this store.

        Waiting must be cancellable: the Session bounds it with its deadline.
        """
        ...

    def conversations(
        self, app_id: str | None = None
    ) -> AsyncIterator[tuple[str, str, dict[str, Any]]]:
        """``(app_id, name, record)`` for every stored conversation (of ``app_id``)."""
        ...

    async def aclose(self) -> None:
        """Release what the store created (never a client it was given)."""
        ...


@runtime_checkable
class LocalStore(Store, Protocol):
    """A store whose operations are local and quick (``FileStore``, ``MemoryStore``).

    The ``*_now`` methods are synchronous and never wait on another process, so a
    Session can read the stored id in its constructor and keep ``session.session_id =``
    and ``clear()`` synchronous, done before they return.

    Example::

        store = tyqw.stores.FileStore("state")
        store.set_now("app", "alice", {"session_id": "5b1f..."})
        store.get_now("app", "alice")            # {"session_id": "5b1f..."}
    """

    def get_now(self, app_id: str, name: str) -> dict[str, Any] | None:
        """``get()``, synchronously."""
        ...

    def set_now(self, app_id: str, name: str, record: dict[str, Any]) -> None:
        """``set()``, synchronously."""
        ...

    def delete_now(self, app_id: str, name: str) -> None:
        """``delete()``, synchronously."""
        ...


class LocalStoreMethods:
    """The async ``get`` / ``set`` / ``delete`` of a ``LocalStore``, from its ``*_now``
    methods: a local operation is quicker than a trip through a thread."""

    def get_now(self, app_id: str, name: str) -> dict[str, Any] | None:
        raise NotImplementedError

    def set_now(self, app_id: str, name: str, record: dict[str, Any]) -> None:
        raise NotImplementedError

    def delete_now(self, app_id: str, name: str) -> None:
        raise NotImplementedError

    async def get(self, app_id: str, name: str) -> dict[str, Any] | None:
        """``get_now()``."""
        return self.get_now(app_id, name)

    async def set(self, app_id: str, name: str, record: dict[str, Any]) -> None:
        """``set_now()``."""
        self.set_now(app_id, name, record)

    async def delete(self, app_id: str, name: str) -> None:
        """``delete_now()``."""
        self.delete_now(app_id, name)


@runtime_checkable
class TurnStore(Protocol):
    """A store with its own versions of a turn's two steps (``RedisStore``: one round
    trip each). ``begin_turn`` returns an opaque token that ``end_turn`` is given back.

    A lock that can be lost while held (a lease) makes its token an object with an
    ``on_lost(callback)`` method, calling ``callback(StoreError(...))`` while the lock is
    still held but can no longer be proven so: the turn it guards then stops (see
    ``TurnLock.on_lost``).
    """

    async def begin_turn(self, app_id: str, name: str) -> tuple[object, dict[str, Any] | None]:
        """Take the lock of ``(app_id, name)`` and read its record."""
        ...

    async def end_turn(
        self, held: object, app_id: str, name: str, record: dict[str, Any] | None
    ) -> None:
        """Write the record (``None``: delete it) and release the lock, always."""
        ...


@runtime_checkable
class TranscriptStore(Protocol):
    """The optional methods a store adds to keep each conversation's transcript.

    An entry is a JSON-compatible dict tyqw owns (``Exchange.to_dict()``); a store keeps
    it as it is. tyqw calls ``append_transcript`` under the conversation's lock, at the
    end of every turn, so the entries of one conversation arrive one at a time and in
    order. A store without these methods serves turns as before and keeps no
    transcript (``Session.history()`` then raises ``StoreError``).

    Example, added to the ``DictStore`` of ``Store``'s example::

        async def append_transcript(self, app_id, name, entry, keep):
            entries = self.transcripts.setdefault((app_id, name), [])
            entries.append(entry)
            del entries[:-keep]
        async def read_transcript(self, app_id, name):
            return list(self.transcripts.get((app_id, name), []))
        async def delete_transcript(self, app_id, name):
            self.transcripts.pop((app_id, name), None)
    """

    async def append_transcript(
        self, app_id: str, name: str, entry: dict[str, Any], keep: int
    ) -> None:
        """Add ``entry`` after the others; keep (at least and, when read, at most) the
        ``keep`` most recent entries (``keep`` >= 1)."""
        ...

    async def read_transcript(self, app_id: str, name: str) -> list[dict[str, Any]]:
        """The kept entries of ``(app_id, name)``, oldest first (``[]`` if none)."""
        ...

    async def delete_transcript(self, app_id: str, name: str) -> None:
        """Forget every entry (nothing happens if there is none)."""
        ...


@final
class TurnLock:
    """The lock a turn holds on its conversation, from ``begin_turn()``.

    Pass it to ``end_turn()``, which releases it; it is released exactly once.
    """

    __slots__ = ("_ended", "_held", "_store", "app_id", "name")

    def __init__(self, store: Store, app_id: str, name: str, held: object) -> None:
        self._store = store
        self.app_id = app_id
        self.name = name
        self._held = held
        self._ended = False

    @property
    def ended(self) -> bool:
        """Whether ``end_turn()`` has released this lock."""
        return self._ended

    def on_lost(self, callback: Callable[[StoreError], object]) -> None:
        """Have ``callback(error)`` called, once, if the store can no longer prove that
        this lock is held (a ``RedisStore`` lease it could not renew in time); at once if
        that already happened. It is called while the lock is still this holder's, so
        stopping the work it guards then keeps two holders from ever overlapping.

        Only a ``TurnStore`` whose token has an ``on_lost(callback)`` method can lose a
        lock; for any other store this does nothing.

        Example::

            held, record = await begin_turn(store, app_id, name)
            held.on_lost(lambda error: task.cancel())
        """
        watch = getattr(self._held, "on_lost", None)
        if watch is not None and not self._ended:
            watch(callback)

    def __repr__(self) -> str:
        state = "ended" if self._ended else "held"
        return f"<TurnLock {self.app_id!r} {self.name!r} {state}>"


_methods_of: dict[tuple[type, tuple[str, ...]], bool] = {}


def _has_methods(cls: type, names: tuple[str, ...]) -> bool:
    found = _methods_of.get((cls, names))
    if found is None:
        found = _methods_of[cls, names] = all(callable(getattr(cls, n, None)) for n in names)
    return found


def has_turn_methods(store: object) -> bool:
    """``isinstance(store, TurnStore)``, answered once per class: a runtime protocol
    check walks every member and costs more than a store's whole turn in memory."""
    return _has_methods(type(store), ("begin_turn", "end_turn"))


def has_transcript_methods(store: object) -> bool:
    """``isinstance(store, TranscriptStore)``, answered once per class."""
    return _has_methods(type(store), ("append_transcript", "read_transcript", "delete_transcript"))


def is_local(store: object) -> TypeGuard[LocalStore]:
    """``isinstance(store, LocalStore)``, answered once per class."""
    return _has_methods(
        type(store), ("get_now", "set_now", "delete_now", "get", "set", "delete", "lock")
    )


def _store_error(store: Store, action: str, exc: Exception) -> StoreError:
    return StoreError(f"{type(store).__name__}: cannot {action} ({type(exc).__name__})")


def read_now(store: LocalStore, app_id: str, name: str) -> dict[str, Any] | None:
    """``store.get_now()``; any failure of the store is a ``StoreError`` (its exception
    is ``__cause__``), as for every other call tyqw makes on a store."""
    try:
        return store.get_now(app_id, name)
    except TyqwError:
        raise
    except Exception as exc:
        raise _store_error(store, "read the conversation", exc) from exc


def write_now(store: LocalStore, app_id: str, name: str, record: dict[str, Any] | None) -> None:
    """``store.set_now()`` (``None``: ``delete_now()``); a failure is a ``StoreError``."""
    try:
        if record is None:
            store.delete_now(app_id, name)
        else:
            store.set_now(app_id, name, record)
    except TyqwError:
        raise
    except Exception as exc:
        raise _store_error(store, "write the conversation", exc) from exc


async def begin_turn(
    store: Store, app_id: str, name: str
) -> tuple[TurnLock, dict[str, Any] | None]:
    """Take the conversation's lock, then read its record: the start of a turn.

    Cancellable while waiting for the lock (nothing is held then). Any failure of the
    store is a ``StoreError`` (the store's exception is ``__cause__``), with the lock
    released.

    Example::

        held, record = await asyncio.wait_for(begin_turn(store, app_id, name), deadline)
        try:
            ...  # run the turn with record["session_id"]
        finally:
            await end_turn(store, held, app_id, name, new_record)
    """
    if has_turn_methods(store):
        try:
            token, record = await cast("TurnStore", store).begin_turn(app_id, name)
        except TyqwError:
            raise
        except Exception as exc:
            raise _store_error(store, "begin a turn", exc) from exc
        return TurnLock(store, app_id, name, token), record
    try:
        held = store.lock(app_id, name)
        await held.__aenter__()
    except TyqwError:
        raise
    except Exception as exc:
        raise _store_error(store, "lock the conversation", exc) from exc
    try:
        record = await store.get(app_id, name)
    except BaseException as exc:
        await _release(store, held)
        if isinstance(exc, Exception) and not isinstance(exc, TyqwError):
            raise _store_error(store, "read the conversation", exc) from exc
        raise
    return TurnLock(store, app_id, name, held), record


async def end_turn(
    store: Store,
    turn_lock: TurnLock,
    app_id: str,
    name: str,
    record: dict[str, Any] | _Keep | None,
) -> None:
    """Write ``record`` (``None``: delete the conversation; ``KEEP``: leave it as it is)
    and release the lock.

    The lock is released whatever happens; a failure is a ``StoreError``. Calling it a
    second time for one lock is a ``RuntimeError``.
    """
    _end_lock(store, turn_lock, app_id, name)
    if has_turn_methods(store):
        if isinstance(record, _Keep):
            # Its own end_turn writes every turn (which renews a TTL, for one).
            raise ValueError("KEEP is for stores without their own end_turn()")
        try:
            await cast("TurnStore", store).end_turn(turn_lock._held, app_id, name, record)
        except TyqwError:
            raise
        except Exception as exc:
            raise _store_error(store, "end the turn", exc) from exc
        return
    held: Any = turn_lock._held
    if isinstance(record, _Keep):
        await _release(store, held, strict=True)
        return
    try:
        if record is None:
            await store.delete(app_id, name)
        else:
            await store.set(app_id, name, record)
    except Exception as exc:
        await _release(store, held)
        if isinstance(exc, TyqwError):
            raise
        raise _store_error(store, "write the conversation", exc) from exc
    except BaseException:
        await _release(store, held)
        raise
    await _release(store, held, strict=True)


def _end_lock(store: Store, turn_lock: TurnLock, app_id: str, name: str) -> None:
    """Mark ``turn_lock`` ended, once, by the store and conversation it is of."""
    if turn_lock._ended:
        raise RuntimeError("end_turn() was already called for this lock")
    if turn_lock._store is not store or (turn_lock.app_id, turn_lock.name) != (app_id, name):
        raise RuntimeError("end_turn() got a lock of another store or conversation")
    turn_lock._ended = True


def folds_appends(store: object) -> bool:
    """Whether ``store`` appends a turn's exchange in its ``end_turn`` step
    (``end_turn_appending``, as ``RedisStore`` does: one round trip, not two)."""
    return has_turn_methods(store) and _has_methods(type(store), ("end_turn_appending",))


async def end_turn_appending(
    store: Store,
    turn_lock: TurnLock,
    app_id: str,
    name: str,
    record: dict[str, Any] | None,
    entry: dict[str, Any],
    keep: int,
) -> StoreError | None:
    """``end_turn()`` that also appends ``entry`` to the transcript (keeping ``keep``), in
    the store's one step, for a store that ``folds_appends()``.

    The lock is released whatever happens; a failure to write the record or release the
    lock is raised (``StoreError``), and nothing is appended then. When only the entry
    could not be kept, the record is written and the lock released all the same, and the
    ``StoreError`` is returned, for the caller to raise once it has noted the write.
    """
    _end_lock(store, turn_lock, app_id, name)
    try:
        why = await cast(Any, store).end_turn_appending(
            turn_lock._held, app_id, name, record, entry, keep
        )
    except TyqwError:
        raise
    except Exception as exc:
        raise _store_error(store, "end the turn", exc) from exc
    if why is None:
        return None
    return StoreError(f"{type(store).__name__}: cannot append to the transcript ({why})")


async def _release(
    store: Store, held: AbstractAsyncContextManager[object], *, strict: bool = False
) -> None:
    """Leave the lock's context; a failure is raised only when nothing else is."""
    try:
        await held.__aexit__(None, None, None)
    except Exception as exc:
        if strict:
            if isinstance(exc, TyqwError):
                raise
            raise _store_error(store, "release the lock", exc) from exc


async def read_history(store: Store, app_id: str, name: str) -> list[Exchange]:
    """The transcript of the conversation ``(app_id, name)``, oldest first, without a
    Session: what ``Session.history()`` returns (an admin script, a page that shows a
    user's conversation). ``[]`` if there is none.

    ``StoreError`` if the store fails or keeps no transcripts; an entry that is not an
    exchange is skipped with a warning.

    Example::

        for exchange in await tyqw.stores.read_history(store, "YOUR_APP_ID", user_id):
            print(exchange.prompt, "->", exchange.reply.text)
    """
    exchanges = []
    for entry in await transcript_entries(store, app_id, name):
        exchange = _exchange(entry, name)
        if exchange is not None:
            exchanges.append(exchange)
    return exchanges


async def transcript_entries(store: Store, app_id: str, name: str) -> list[dict[str, Any]]:
    """The stored entries of the transcript, oldest first, not decoded yet; errors as
    ``read_history()``'s."""
    if not has_transcript_methods(store):
        raise StoreError(
            f"{type(store).__name__} keeps no transcripts: a store keeps them "
            "when it has append_transcript(), read_transcript() and "
            "delete_transcript() (see tyqw.stores.TranscriptStore)"
        )
    try:
        return await cast("TranscriptStore", store).read_transcript(app_id, name)
    except TyqwError:
        raise
    except Exception as exc:
        raise _store_error(store, "read the transcript", exc) from exc


def recent_replied(entries: list[dict[str, Any]], name: str, count: int) -> list[Exchange]:
    """The ``count`` most recent exchanges of ``entries`` that got reply text, oldest
    first. Only those are decoded: a conversation the service forgot resends a few of
    a transcript that holds up to hundreds, and decoding them all cost more than the
    turn."""
    picked: list[Exchange] = []
    for entry in reversed(entries):
        if len(picked) >= count:
            break
        exchange = _exchange(entry, name)
        if exchange is not None and exchange.reply.text:
            picked.append(exchange)
    picked.reverse()
    return picked


def _exchange(entry: dict[str, Any], name: str) -> Exchange | None:
    try:
        return Exchange.from_dict(entry)
    except ValueError as exc:
        logger.warning("tyqw: skipping an unreadable exchange of %r: %s", name, exc)
        return None


async def forget(store: Store, app_id: str, name: str) -> None:
    """Delete the conversation ``(app_id, name)`` entirely: its record and its
    transcript, together, under its lock. For a user who asks to be forgotten.

    Any failure of the store is a ``StoreError``; the lock is released whatever happens.

    Example::

        await tyqw.stores.forget(store, "YOUR_APP_ID", user_id)
    """
    held, _ = await begin_turn(store, app_id, name)
    try:
        if has_transcript_methods(store):
            try:
                await cast("TranscriptStore", store).delete_transcript(app_id, name)
            except TyqwError:
                raise
            except Exception as exc:
                raise _store_error(store, "delete the transcript", exc) from exc
    except BaseException:
        await end_turn(store, held, app_id, name, None)
        raise
    await end_turn(store, held, app_id, name, None)
