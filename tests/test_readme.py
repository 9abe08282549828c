"""The README shows the real API: its quickstart is the example file, verbatim."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_quickstart_is_the_example_file() -> None:
    """The first Python block under "Quickstart" is examples/quickstart.py."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Quickstart", 1)[1]
    block = re.search(r"```python\n(.*?)```", section, re.S)
    assert block is not None
    assert block.group(1) == (ROOT / "examples" / "quickstart.py").read_text(encoding="utf-8")


def test_readme_commands_match_ci() -> None:
    """The install-and-test command CI runs is the one the README shows."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "pip install -e '.[dev]' && .venv/bin/pytest" in readme
    assert ".venv/bin/tyqw chat" in readme
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert "pip\" install -q --disable-pip-version-check -e '.[dev]'" in ci
    assert '/bin/pytest"' in ci
