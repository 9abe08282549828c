"""tyqw: chat with Alibaba Cloud Bailian (Model Studio) applications and Qwen models.

Example::

    import asyncio
    from tyqw import Session

    async def main() -> None:
        async with Session("YOUR_APP_ID") as session:      # key from DASHSCOPE_API_KEY
            session.on("message", lambda m: print(m.delta, end="", flush=True))
            await session.send("你好")

    asyncio.run(main())
"""

from ._exceptions import (
    APIConnectionError,
    APIStatusError,
    APITimeoutError,
    AuthenticationError,
    BadRequestError,
    ConnectionLostError,
    ContextLengthError,
    EventTooLargeError,
    HandlerError,
    IncompleteStreamError,
    InternalServerError,
    MissingAPIKeyError,
    NotFoundError,
    PermissionDeniedError,
    RateLimitError,
    RecordedError,
    SessionClosedError,
    StoreError,
    StreamError,
    TyqwError,
    UnexpectedContentTypeError,
)
from ._history import Exchange, Expiry
from ._models import Citation, Message, Reply, Thought, TokenUsage, ToolCall, WorkflowEvent
from ._options import RagOptions
from ._session import DEFAULT_BASE_URL, MessageStream, Options, Session
from ._settings import SessionSettings
from ._sync import SyncSession
from ._telemetry import configure_telemetry
from ._version import __version__
from .stores._listing import StoredConversation, stored_conversations

__all__ = [
    "DEFAULT_BASE_URL",
    "APIConnectionError",
    "APIStatusError",
    "APITimeoutError",
    "AuthenticationError",
    "BadRequestError",
    "Citation",
    "ConnectionLostError",
    "ContextLengthError",
    "EventTooLargeError",
    "Exchange",
    "Expiry",
    "HandlerError",
    "IncompleteStreamError",
    "InternalServerError",
    "Message",
    "MessageStream",
    "MissingAPIKeyError",
    "NotFoundError",
    "Options",
    "PermissionDeniedError",
    "RagOptions",
    "RateLimitError",
    "RecordedError",
    "Reply",
    "Session",
    "SessionClosedError",
    "SessionSettings",
    "StoreError",
    "StoredConversation",
    "StreamError",
    "SyncSession",
    "Thought",
    "TokenUsage",
    "ToolCall",
    "TyqwError",
    "UnexpectedContentTypeError",
    "WorkflowEvent",
    "__version__",
    "configure_telemetry",
    "stored_conversations",
]
