"""``SessionSettings``: its docstring's defaults are the ones a ``Session`` gets."""

from __future__ import annotations

import ast
import re

import pytest

import tyqw
from tyqw.stores import MemoryStore

# ``name=value`` in the docstring; a value followed by "(...)" comes from the environment.
DEFAULT = re.compile(r"``(\w+)=([^`]+)``")


def documented_defaults() -> dict[str, object]:
    doc = tyqw.SessionSettings.__doc__ or ""
    defaults: dict[str, object] = {}
    for name, text in DEFAULT.findall(doc):
        if text.endswith(" MiB"):
            defaults[name] = int(text.removesuffix(" MiB")) * 1024 * 1024
        else:
            defaults[name] = ast.literal_eval(text)
    return defaults


def test_the_docstring_names_every_setting_once() -> None:
    """Every keyword of SessionSettings has its default written in the docstring."""
    doc = tyqw.SessionSettings.__doc__ or ""
    names = [name for name, _ in DEFAULT.findall(doc)]
    assert sorted(names) == sorted(tyqw.SessionSettings.__annotations__)


@pytest.mark.parametrize(
    "setting",
    [
        "model",
        "system",
        "name",
        "max_retries",
        "connect_timeout",
        "read_timeout",
        "deadline",
        "max_event_size",
    ],
)
async def test_a_documented_default_is_what_a_session_gets(setting: str) -> None:
    """A Session made without the setting reports the docstring's default."""
    async with tyqw.Session("a" * 32, api_key="sk-unused", store=MemoryStore()) as session:
        assert getattr(session, setting) == documented_defaults()[setting]


def test_a_model_sessions_documented_budgets_are_the_ones_it_uses() -> None:
    """The tool rounds and history budget the docstring gives are the code's defaults."""
    from tyqw._context import DEFAULT_HISTORY_CHARS
    from tyqw._tools import MAX_TOOL_ROUNDS

    defaults = documented_defaults()
    assert (defaults["max_tool_rounds"], defaults["max_history_chars"]) == (
        MAX_TOOL_ROUNDS,
        DEFAULT_HISTORY_CHARS,
    )
