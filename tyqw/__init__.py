"""tyqw: chat with Alibaba Cloud Bailian (Model Studio) applications.

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
    EventTooLargeError,
    HandlerError,
    IncompleteStreamError,
    InternalServerError,
    MissingAPIKeyError,
    NotFoundError,
    PermissionDeniedError,
    RateLimitError,
    SessionClosedError,
    StoreError,
    StreamError,
    TyqwError,
    UnexpectedContentTypeError,
)
from ._models import Message, Reply
from ._session import DEFAULT_BASE_URL, MessageStream, Options, Session
from ._store import StoredConversation, stored_conversations
from ._sync import SyncSession

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_BASE_URL",
    "APIConnectionError",
    "APIStatusError",
    "APITimeoutError",
    "AuthenticationError",
    "BadRequestError",
    "EventTooLargeError",
    "HandlerError",
    "IncompleteStreamError",
    "InternalServerError",
    "Message",
    "MessageStream",
    "MissingAPIKeyError",
    "NotFoundError",
    "Options",
    "PermissionDeniedError",
    "RateLimitError",
    "Reply",
    "Session",
    "SessionClosedError",
    "StoreError",
    "StoredConversation",
    "StreamError",
    "SyncSession",
    "TyqwError",
    "UnexpectedContentTypeError",
    "__version__",
    "stored_conversations",
]
