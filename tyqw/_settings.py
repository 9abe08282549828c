"""``SessionSettings``: every keyword a ``Session`` (and a ``SyncSession``) takes, written
once. ``Session``'s constructor reads them with their defaults; ``Config`` resolves the
connection's part; ``SyncSession`` passes them on unchanged."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, TypedDict

if TYPE_CHECKING:
    from ._history import Expiry
    from ._tools import ToolSpec
    from .stores import Store

__all__ = ["SessionSettings", "check_keywords"]


class SessionSettings(TypedDict, total=False):
    """The keyword arguments of ``Session`` and ``SyncSession`` (all optional), with
    their defaults: see ``Session`` for what each does.

    ``model=None``, ``system=None``, ``tools=None``, ``max_tool_rounds=8``,
    ``max_history_chars=24000``, ``api_key=None`` (``DASHSCOPE_API_KEY``),
    ``base_url=None`` (``DASHSCOPE_BASE_URL`` or the service's), ``workspace=None``
    (``DASHSCOPE_WORKSPACE``), ``name="default"``, ``state_dir=None``, ``store=None``
    (a ``FileStore`` in the user state folder), ``max_retries=2``,
    ``connect_timeout=10.0``, ``read_timeout=120.0``, ``deadline=None``,
    ``max_event_size=16 MiB``, ``allow_insecure_http=False``, ``trust_env=True``,
    ``proxy=None``, ``history=True``, ``expiry=True``.

    Example::

        settings: tyqw.SessionSettings = {"name": "alice", "read_timeout": 60.0}
        async with tyqw.Session("YOUR_APP_ID", **settings) as session:
            await session.send("你好")
    """

    model: str | None
    system: str | None
    tools: Sequence[ToolSpec] | None
    max_tool_rounds: int
    max_history_chars: int
    api_key: str | None
    base_url: str | None
    workspace: str | None
    name: str
    state_dir: str | os.PathLike[str] | None
    store: Store | None
    max_retries: int
    connect_timeout: float
    read_timeout: float
    deadline: float | None
    max_event_size: int
    allow_insecure_http: bool
    trust_env: bool
    proxy: str | None
    history: bool | int
    expiry: bool | Expiry


_KEYWORDS = frozenset(SessionSettings.__annotations__)


def check_keywords(who: str, settings: Mapping[str, object]) -> None:
    """``TypeError`` for a keyword that is no setting, as a signature would raise it."""
    for keyword in settings:
        if keyword not in _KEYWORDS:
            raise TypeError(f"{who}() got an unexpected keyword argument {keyword!r}")
