"""The Bailian simulator: a local, protocol-faithful app-completion server.

Used by the ``tyqw`` command's offline mode and ``tyqw simulate``, and published for
tests as :mod:`tyqw.testing`. Read top-down, one module per concept:

- :mod:`.wire` - the SSE frame writer and the header switches (SSE, gzip)
- :mod:`.errors` - DashScope's error codes and messages, refusals
- :mod:`.apps` - which app ids exist, workspaces, workflows, reasoning models
- :mod:`.validation` - the checks a request passes, and what a valid body asks
- :mod:`.conversations` - conversations by ``session_id``, memories by ``memory_id``
- :mod:`.replies` - the built-in bilingual bot
- :mod:`.knowledge` - retrieval, citations, ``doc_references`` and thoughts
- :mod:`.answers` - the answer to one request and the payloads that carry it
- :mod:`.streams` - writing a response: raw bytes, SSE events, one JSON body
- :mod:`.faults` - :class:`Fault`, and how each kind acts
- :mod:`.records` - :class:`SimRequest`
- :mod:`.server` - :class:`BailianSimulator`
- :mod:`.offline` - :func:`run_offline`
- :mod:`.spec` - the ``--fault`` spec language of ``tyqw simulate``
"""

from __future__ import annotations

from .apps import DEFAULT_APP_ID, OFFLINE_APP_ID
from .faults import Fault, FaultKind
from .offline import run_offline
from .records import SimRequest
from .replies import ReplyFunc, default_reply
from .server import BailianSimulator
from .spec import SPEC_HELP, parse_fault_spec

__all__ = [
    "DEFAULT_APP_ID",
    "OFFLINE_APP_ID",
    "SPEC_HELP",
    "BailianSimulator",
    "Fault",
    "FaultKind",
    "ReplyFunc",
    "SimRequest",
    "default_reply",
    "parse_fault_spec",
    "run_offline",
]
