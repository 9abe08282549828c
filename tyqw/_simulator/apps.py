"""The apps the simulator knows: their ids, the workspace each needs, which are workflows,
and whether the app's model reasons.

By default only the simulator's own app id exists, as on the real service an id that no
app has is refused with ``InvalidParameter``. The offline mode of the ``tyqw`` command
runs its in-process simulator under another id, so that its conversations are stored
apart from those held with a ``tyqw simulate`` process.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

from .errors import BAD_APP_ID, Refusal, invalid

#: The app id of a simulator started without ``app_ids``.
DEFAULT_APP_ID = "5f1a7c0e9d2b4e6f8a3c1b7d9e0f2a4c"
#: The app id of the in-process simulator behind ``tyqw ask/chat`` without a key.
OFFLINE_APP_ID = "0ff1ce0e9d2b4e6f8a3c1b7d9e0f2a4c"

#: What an app id can look like in a request path (the console's are 32 hex digits).
APP_ID_PATTERN = re.compile(r"[A-Za-z0-9_-]{1,64}")

# Models that think before they answer, and so send a reasoning thought.
_REASONING_MODEL = re.compile(r"deepseek-r1|deepseek-reasoner|qwq|qvq|thinking", re.I)


def is_reasoning_model(model_id: str) -> bool:
    """True for ids of reasoning models (``deepseek-r1``, ``qwq-plus``, ``*-thinking`` ...).

    For example::

        assert is_reasoning_model("deepseek-r1") and not is_reasoning_model("qwen-plus")
    """
    return _REASONING_MODEL.search(model_id) is not None


class Apps:
    """Which app ids exist; ``first`` is the one a simulator offers as its ``app_id``."""

    __slots__ = ("first", "known", "workflows", "workspaces")

    def __init__(
        self,
        app_ids: Iterable[str] | None,
        workspaces: Mapping[str, str] | None,
        workflows: Iterable[str] | None,
    ) -> None:
        self.workspaces = dict(workspaces or {})
        self.workflows = frozenset(workflows or ())
        ordered = [DEFAULT_APP_ID] if app_ids is None else list(app_ids)
        self.known = frozenset([*ordered, *self.workspaces, *sorted(self.workflows)])
        listed = [*ordered, *self.workspaces, *sorted(self.workflows)]
        self.first = listed[0] if listed else DEFAULT_APP_ID

    def check(self, app_id: str, workspace: str | None) -> None:
        """Refuse an unknown app id, or a listed app called without its workspace."""
        if app_id not in self.known:
            raise invalid(BAD_APP_ID)
        needed = self.workspaces.get(app_id)
        if needed is not None and workspace != needed:
            raise Refusal(403, "Workspace.AccessDenied", inband=True)

    def is_workflow(self, app_id: str) -> bool:
        return app_id in self.workflows
