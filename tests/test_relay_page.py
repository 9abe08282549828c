"""The chat page's colours read at WCAG AA contrast in both themes, computed from the
page's own stylesheet (tyqw/relay/page/index.html), with no browser."""

from __future__ import annotations

import re
from importlib import resources

import pytest

# Every text colour of the page and each background it is drawn on.
PAIRS = [
    ("fg", "bg"),
    ("fg", "user"),
    ("fg", "reply"),
    ("fg", "code"),
    ("fg", "chosen"),
    ("muted", "bg"),
    ("muted", "reply"),
    ("muted", "code"),
    ("muted", "chosen"),
    ("error", "bg"),
    ("error", "reply"),
    ("accent", "bg"),
    ("accent", "reply"),
    ("on-accent", "accent"),
    ("notice-fg", "notice-bg"),
]
AA = 4.5  # normal-size text


def themes() -> dict[str, dict[str, str]]:
    """The custom properties of the light theme and of the dark one (light's, overridden)."""
    html = resources.files("tyqw.relay").joinpath("page/index.html").read_text("utf-8")
    css = re.search(r"<style>(.*?)</style>", html, re.S)
    assert css is not None
    blocks = re.findall(r":root\s*\{([^}]*)\}", css.group(1))
    light, dark = (dict(re.findall(r"--([\w-]+):\s*(#[0-9a-fA-F]{6})", block)) for block in blocks)
    assert "prefers-color-scheme: dark" in css.group(1)
    return {"light": light, "dark": {**light, **dark}}


def luminance(colour: str) -> float:
    def channel(value: int) -> float:
        c = value / 255
        return c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4

    r, g, b = (int(colour[i : i + 2], 16) for i in (1, 3, 5))
    return 0.2126 * channel(r) + 0.7152 * channel(g) + 0.0722 * channel(b)


def contrast(a: str, b: str) -> float:
    high, low = sorted((luminance(a), luminance(b)), reverse=True)
    return (high + 0.05) / (low + 0.05)


def test_contrast_is_computed_as_wcag_defines_it() -> None:
    """Black on white is 21:1, a colour on itself 1:1, and #767676 on white the
    familiar 4.54:1."""
    assert contrast("#000000", "#ffffff") == pytest.approx(21.0)
    assert contrast("#123456", "#123456") == pytest.approx(1.0)
    assert contrast("#767676", "#ffffff") == pytest.approx(4.54, abs=0.01)


@pytest.mark.parametrize("theme", ["light", "dark"])
def test_every_text_colour_reads_at_aa_contrast(theme: str) -> None:
    """Each text colour of the page against each background it appears on has a
    contrast ratio of at least 4.5:1 (WCAG 2 AA for normal text)."""
    colours = themes()[theme]
    low = {
        f"{text} on {back}": round(contrast(colours[text], colours[back]), 2)
        for text, back in PAIRS
        if contrast(colours[text], colours[back]) < AA
    }
    assert low == {}
