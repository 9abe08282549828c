"""A relay that lets browsers chat with a Bailian app without ever seeing the key.

``create_app()`` returns an ``aiohttp.web.Application`` serving the service's own
endpoint, ``POST /api/v1/apps/{app_id}/completion`` (same request body, same SSE or
JSON answer), OpenAI's Chat Completions (``POST /v1/chat/completions``, ``GET
/v1/models``: each app id a model), the AI SDK's UI message stream (``POST /api/chat``,
what ``useChat`` calls), and a chat page at ``/``. The DashScope key stays in the server's
environment; clients authenticate with the relay's own tokens, and each user's
conversation is kept by the relay. ``tyqw serve`` runs it from the command line.

Example::

    from aiohttp import web
    from tyqw.relay import create_app

    app = web.Application()  # your existing app
    app.add_subapp("/tyqw", create_app(["YOUR_APP_ID"], tokens={"a-long-random-token": "alice"}))
    web.run_app(app, port=8000, handler_cancellation=True)
"""

from ._app import create_app
from ._auth import ANONYMOUS, Authenticate, load_tokens

__all__ = ["ANONYMOUS", "Authenticate", "create_app", "load_tokens"]
