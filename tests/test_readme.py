"""The README and the documentation site show the real API: every Python block runs.

Each ```python block of README.md and docs/*.md runs alone, as a reader would run it,
against a simulator in this test's event loop: ``DASHSCOPE_API_KEY``,
``DASHSCOPE_BASE_URL`` and ``DASHSCOPE_APP_ID`` point at it, and ``REDIS_URL`` at a real
redis-server for a block that reads it. A block may use a top-level ``await`` (as in
``python -m asyncio`` or a notebook) or call ``asyncio.run()`` itself (as a script does);
it runs on a thread of its own, with no event loop of its own until it makes one. A
block that defines ``async def test_...(tmp_path)`` functions (the testing guide's) has
them called too.

A block that cannot run alone (a server that runs until Ctrl-C) is marked, sparingly,
by an HTML comment on the line before its fence, which neither GitHub nor MkDocs shows:
``<!-- not run: WHY -->``. Such a block is still compiled, so it is valid Python.
"""

from __future__ import annotations

import ast
import asyncio
import contextlib
import inspect
import re
import textwrap
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tyqw.testing import BailianSimulator

from .cli_helpers import BOUND

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
BLOCK = re.compile(
    r"(?:^<!-- not run: (?P<why>[^\n]+?) -->\n)?"
    r"^(?P<indent>[ ]*)```python\n(?P<code>.*?)^(?P=indent)```$",
    re.S | re.M,
)


def python_blocks(*, run: bool) -> list[Any]:
    """The Python blocks of the pages that run (or not), as pytest params named PAGE:LINE."""
    return list(_blocks(run=run))


def _blocks(*, run: bool) -> Iterator[Any]:
    for page in PAGES:
        text = page.read_text(encoding="utf-8")
        for match in BLOCK.finditer(text):
            if (match["why"] is None) != run:
                continue
            line = text.count("\n", 0, match.start("code")) + 1
            name = f"{page.relative_to(ROOT).as_posix()}:{line}"
            yield pytest.param(name, textwrap.dedent(match["code"]), id=name)


def block_code(name: str, code: str) -> Any:
    """``code`` compiled as a module that may ``await`` at its top level."""
    return compile(code, name, "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)


def run_block(name: str, code: str, tmp_path: Path) -> None:
    """Run one block as ``__main__`` on this thread, then any test functions it defined."""
    namespace: dict[str, Any] = {"__name__": "__main__"}
    result = eval(block_code(name, code), namespace)
    if inspect.iscoroutine(result):  # a top-level await
        asyncio.run(result)
    for key, value in list(namespace.items()):
        if key.startswith("test_") and inspect.iscoroutinefunction(value):
            asyncio.run(value(tmp_path / key))


@pytest.mark.parametrize(("name", "code"), python_blocks(run=True))
async def test_python_block_runs(
    name: str,
    code: str,
    sim: BailianSimulator,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    request: pytest.FixtureRequest,
) -> None:
    """The block runs to its end against the simulator, as a reader runs it."""
    monkeypatch.setenv("DASHSCOPE_API_KEY", sim.api_key)
    monkeypatch.setenv("DASHSCOPE_BASE_URL", sim.base_url)
    monkeypatch.setenv("DASHSCOPE_APP_ID", sim.app_id)
    if "REDIS_URL" in code:
        monkeypatch.setenv("REDIS_URL", request.getfixturevalue("redis_url"))
    monkeypatch.chdir(tmp_path)  # a file a block writes lands in this test's folder
    await asyncio.wait_for(on_a_thread(run_block, name, code, tmp_path), BOUND)


async def on_a_thread(function: Callable[..., None], *args: Any) -> None:
    """``function(*args)`` on a daemon thread of its own: a block that hangs fails its test
    at the bound and never holds up the end of the test run (as an executor thread would)."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[None] = loop.create_future()

    def finish(error: BaseException | None) -> None:
        if done.done():  # the test gave up waiting
            return
        if error is None:
            done.set_result(None)
        else:
            done.set_exception(error)

    def target() -> None:
        error: BaseException | None = None
        try:
            function(*args)
        except BaseException as exc:
            error = exc
        with contextlib.suppress(RuntimeError):  # the test's loop is already closed
            loop.call_soon_threadsafe(finish, error)

    threading.Thread(target=target, name="docs-block", daemon=True).start()
    await done


@pytest.mark.parametrize(("name", "code"), python_blocks(run=False))
def test_a_block_not_run_is_still_python(name: str, code: str) -> None:
    """A block marked "not run" compiles, and says why it is not run."""
    block_code(name, code)


def test_every_page_has_its_blocks_found() -> None:
    """No ```python fence escapes the pattern the tests read blocks with."""
    found = len(list(python_blocks(run=True))) + len(list(python_blocks(run=False)))
    fences = sum(
        len(re.findall(r"^[ ]*```python$", page.read_text(encoding="utf-8"), re.M))
        for page in PAGES
    )
    assert found == fences


def test_quickstart_is_the_example_file() -> None:
    """The Python block under "## A complete script" in the quickstart is
    examples/quickstart.py."""
    page = (ROOT / "docs" / "quickstart.md").read_text(encoding="utf-8")
    section = page.split("\n## A complete script\n", 1)[1]
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


def test_readme_is_a_front_page_with_absolute_links() -> None:
    """The README stays short, and every link and image in it is absolute, so it reads the
    same on a package index page as in the repository."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(readme.splitlines()) <= 300
    targets = re.findall(r"\]\(([^)\s]+)\)|<(https?://[^>\s]+)>|src=\"([^\"]+)\"", readme)
    links = [next(part for part in target if part) for target in targets]
    assert links, "no link found: the pattern above no longer matches the README"
    relative = [link for link in links if not link.startswith("https://")]
    assert relative == []


def heading_ids(page: str) -> set[str]:
    """The anchors MkDocs gives a page's headings (Python-Markdown's default slugs)."""
    ids = set()
    for heading in re.findall(r"^#{1,6} (.+)$", page, re.M):
        text = re.sub(r"[^\w\s-]", "", heading.replace("`", "")).strip().lower()
        ids.add(re.sub(r"[\s-]+", "-", text))
    return ids


def test_readme_links_to_the_docs_reach_a_page() -> None:
    """Each link of the README into the documentation site names a page of docs/ (and a
    heading of it), at the site's address in mkdocs.yml and pyproject.toml."""
    site = re.search(r"^site_url: (\S+)$", (ROOT / "mkdocs.yml").read_text(), re.M)
    assert site is not None
    assert f'Documentation = "{site[1]}"' in (ROOT / "pyproject.toml").read_text()
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    links = re.findall(re.escape(site[1]) + r"([^)>\s#]*)(?:#([^)>\s]+))?", readme)
    assert len(links) > 10
    for path, anchor in links:
        page = ROOT / "docs" / (path.rstrip("/") or "index")
        page = page.with_suffix(".md")
        assert page.is_file(), f"{site[1]}{path} has no page in docs/"
        if anchor:
            assert anchor in heading_ids(page.read_text(encoding="utf-8")), anchor
