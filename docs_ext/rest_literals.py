"""A Griffe extension for the API reference: tyqw's docstrings as Markdown.

tyqw's docstrings introduce their examples the reStructuredText way, a paragraph ending in
``::`` followed by an indented block, which reads well in ``help()`` and in an editor.
Markdown (what mkdocstrings renders) would show the ``::`` and an unhighlighted block, so
this turns each such block into a fenced Python block and the ``::`` into ``:``.
mkdocs.yml loads it (``extensions:`` of the python handler); nothing imports it.
"""

from __future__ import annotations

import re
import textwrap
from typing import Any

import griffe

# A line ending in "::", a blank line, then lines indented by at least four spaces (blank
# lines may separate them) up to the first line that is not indented.
_LITERAL = re.compile(r"::\n\n((?:(?:    [^\n]*)?\n)*(?:    [^\n]*(?:\n|$)))")


def _fence(match: re.Match[str]) -> str:
    code = textwrap.dedent(match.group(1)).strip("\n")
    return f":\n\n```python\n{code}\n```\n"


def markdown(docstring: str) -> str:
    """``docstring`` with each reST literal block as a fenced Python block."""
    return _LITERAL.sub(_fence, docstring)


class ReSTLiterals(griffe.Extension):
    """Rewrites every docstring Griffe loads (see the module's docstring)."""

    def on_instance(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = markdown(obj.docstring.value)
