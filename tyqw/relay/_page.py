"""The chat page: one HTML file shipped as package data, served with a strict CSP.

The page's script and style are inline (one file, no build step, nothing fetched from
elsewhere), and the Content-Security-Policy allows exactly those two blocks by their
SHA-256 hashes and connections to this origin only. The page writes replies with
``textContent``; the policy is the second wall, should a reply ever reach the DOM as
HTML: no other script can run and nothing can be loaded from or sent to elsewhere.
"""

from __future__ import annotations

import base64
import hashlib
import re
from dataclasses import dataclass
from importlib import resources

from aiohttp import web

__all__ = ["Page"]

_BLOCK = re.compile(r"<(script|style)>(.*?)</\1>", re.S)


@dataclass(frozen=True, slots=True)
class Page:
    html: bytes
    policy: str

    @classmethod
    def load(cls) -> Page:
        html = resources.files(__package__).joinpath("page/index.html").read_text("utf-8")
        sources: dict[str, list[str]] = {"script": [], "style": []}
        for kind, body in _BLOCK.findall(html):
            digest = base64.b64encode(hashlib.sha256(body.encode()).digest()).decode()
            sources[kind].append(f"'sha256-{digest}'")
        policy = "; ".join(
            [
                "default-src 'none'",
                f"script-src {' '.join(sources['script'])}",
                f"style-src {' '.join(sources['style'])}",
                "connect-src 'self'",
                "img-src 'self' data:",
                "base-uri 'none'",
                "form-action 'none'",
                "frame-ancestors 'none'",
            ]
        )
        return cls(html.encode(), policy)

    def response(self) -> web.Response:
        return web.Response(
            body=self.html,
            headers={
                "Content-Type": "text/html; charset=utf-8",
                "Content-Security-Policy": self.policy,
                "X-Content-Type-Options": "nosniff",
                "Referrer-Policy": "no-referrer",
                "Cache-Control": "no-cache",
            },
        )
