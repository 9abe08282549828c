"""The chat page in a real Chromium (Debian's, through its chromedriver, with Selenium).

Both paths are given to Selenium explicitly, so Selenium Manager never looks for or
downloads a browser or a driver. The simulator and the relay run on their own event
loop in a thread (``RelayThread``) while Selenium blocks this one. Every wait is
WebDriverWait on a condition of the page, with a bound.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tyqw.testing import Fault, default_reply

from .helpers import missing
from .relay_helpers import ALICE, RelayThread

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
WAIT = 15.0
SCREENSHOT_ENV = "TYQW_RELAY_SCREENSHOT"
"""Set to a path (docs/relay.png) to keep the README's screenshot from the test."""

pytestmark = pytest.mark.filterwarnings("ignore::ResourceWarning:selenium")

# Records every text the newest reply showed, to see it grow.
WATCH_REPLY = """
window.seen = [];
new MutationObserver(() => {
  const replies = document.querySelectorAll('.reply');
  const last = replies[replies.length - 1];
  if (last) window.seen.push(last.querySelector('.text').textContent);
}).observe(document.getElementById('log'), {subtree: true, childList: true, characterData: true});
"""


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """One headless Chromium for the module, with a fresh empty profile."""
    if not CHROMIUM.exists() or not CHROMEDRIVER.exists():
        missing("no Chromium: apt-get install chromium chromium-driver")
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        missing("no selenium: pip install -e '.[dev]'")
    profile = tempfile.mkdtemp(prefix="tyqw-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile}",
        "--window-size=960,720",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service(executable_path=str(CHROMEDRIVER)))
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture
def served() -> Iterator[RelayThread]:
    relay = RelayThread(delay=0.05).start(turn_options={"rag_options": {"pipeline_ids": ["kb-1"]}})
    try:
        yield relay
    finally:
        relay.stop()


def open_page(browser: Any, served: RelayThread, size: tuple[int, int] = (960, 720)) -> Any:
    from selenium.webdriver.common.by import By

    browser.set_window_size(*size)
    assert served.relay is not None
    browser.get(f"{served.relay.root}/#token={ALICE}")
    until(browser, "document.body.dataset.ready === 'true'")
    browser.execute_script(WATCH_REPLY)
    return browser.find_element(By.ID, "prompt")


def until(browser: Any, condition: str) -> Any:
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(browser, WAIT).until(lambda b: b.execute_script(f"return {condition}"))


def last_reply_is(browser: Any, state: str) -> Any:
    return until(
        browser,
        f"[...document.querySelectorAll('.reply')].pop()?.dataset.state === '{state}'",
    )


def reply_texts(browser: Any) -> list[str]:
    texts: list[str] = browser.execute_script(
        "return [...document.querySelectorAll('.reply .text')].map(e => e.textContent)"
    )
    return texts


def click(browser: Any, element_id: str) -> None:
    from selenium.webdriver.common.by import By

    browser.find_element(By.ID, element_id).click()


def test_reply_streams_in_and_the_second_turn_remembers_the_first(
    browser: Any, served: RelayThread
) -> None:
    """Enter sends; the reply grows in at least two steps before it ends; the second
    turn of the conversation remembers the name told in the first."""
    prompt = open_page(browser, served)
    prompt.send_keys("my name is Ada\n")
    last_reply_is(browser, "done")
    final = default_reply("my name is Ada", [])
    seen: list[str] = browser.execute_script("return window.seen")
    partial = {text for text in seen if text and text != final}
    assert len(partial) >= 2, seen
    assert all(final.startswith(text) for text in partial)
    prompt.send_keys("what's my name?\n")
    last_reply_is(browser, "done")
    assert reply_texts(browser) == [
        final,
        "Your name is Ada. You told me earlier in this conversation.",
    ]


def test_new_conversation_forgets(browser: Any, served: RelayThread) -> None:
    """New conversation clears the page and the next turn starts without the context."""
    prompt = open_page(browser, served)
    prompt.send_keys("my name is Ada\n")
    last_reply_is(browser, "done")
    click(browser, "new")
    assert reply_texts(browser) == []
    prompt.send_keys("what's my name?\n")
    last_reply_is(browser, "done")
    assert reply_texts(browser) == [default_reply("what's my name?", [])]
    assert served.sim is not None
    assert "session_id" not in served.sim.requests[-1].body["input"]


def test_stop_keeps_the_partial_reply_closes_upstream_and_the_next_turn_works(
    browser: Any, served: RelayThread
) -> None:
    """Stop mid-reply: the text so far stays with a [stopped] mark, the relay closes the
    upstream request within 1 s, and the next turn streams normally."""
    sim = served.sim
    assert sim is not None
    full = "a long story " * 40
    sim.reply = lambda prompt, history: full if prompt == "tell me a story" else "fine."
    sim.delay = 0.3
    prompt = open_page(browser, served)
    prompt.send_keys("tell me a story\n")
    until(browser, "[...document.querySelectorAll('.reply .text')].pop().textContent.length > 0")
    click(browser, "stop")
    last_reply_is(browser, "stopped")
    [partial] = reply_texts(browser)
    assert partial and full.startswith(partial) and len(partial) < len(full)
    assert (
        browser.execute_script("return document.querySelector('.reply .stopped').textContent")
        == "[stopped]"
    )
    upstream = sim.requests[-1]
    served.call(asyncio.wait_for(upstream.done.wait(), 1.0))
    assert upstream.disconnected
    sim.delay = 0.0
    prompt.send_keys("and then?\n")
    last_reply_is(browser, "done")
    assert reply_texts(browser) == [partial, "fine."]


def test_an_upstream_error_shows_a_readable_line_with_the_request_id(
    browser: Any, served: RelayThread
) -> None:
    """An in-band error from the service becomes one line: its message, HTTP status,
    code and request id; the partial text before it stays."""
    assert served.sim is not None
    served.sim.inject(Fault.stream_error(after=1, status=400, code="DataInspectionFailed"))
    prompt = open_page(browser, served)
    prompt.send_keys("hello there\n")
    last_reply_is(browser, "error")
    line = browser.execute_script("return document.querySelector('.reply .error').textContent")
    request_id = served.sim.requests[-1].request_id
    assert line.startswith("error: ")
    assert f"(HTTP 400, code DataInspectionFailed, request_id {request_id})" in line
    assert reply_texts(browser) == [default_reply("hello there", [])[:4]]


def test_a_refused_token_asks_for_one(browser: Any, served: RelayThread) -> None:
    """With a wrong token the page shows the 401 line and the token field; a good token
    typed there makes the next send work."""
    from selenium.webdriver.common.by import By

    assert served.relay is not None
    browser.get(f"{served.relay.root}/#token=wrong-token-0123456789")
    until(browser, "document.body.dataset.ready === 'true'")
    prompt = browser.find_element(By.ID, "prompt")
    prompt.send_keys("hi\n")
    last_reply_is(browser, "error")
    assert "HTTP 401, code InvalidApiKey" in browser.execute_script(
        "return document.querySelector('.reply .error').textContent"
    )
    assert browser.find_element(By.ID, "auth").is_displayed()
    browser.find_element(By.ID, "token").send_keys(ALICE)
    click(browser, "save-token")
    prompt.send_keys("hello there\n")
    last_reply_is(browser, "done")


def test_a_custom_hook_can_know_users_by_a_cookie_of_the_site(browser: Any) -> None:
    """With authenticate= reading the site's own login cookie, the page sends without
    asking for a token, and the hook's user is the one whose conversation it is."""
    from selenium.webdriver.common.by import By

    users: list[str] = []

    def authenticate(request: Any) -> str | None:
        user = {"cookie-of-carol": "carol"}.get(request.cookies.get("login", ""))
        users.extend([user] if user else [])
        return user

    served = RelayThread(delay=0.0).start(authenticate=authenticate)
    try:
        assert served.relay is not None
        browser.get(f"{served.relay.root}/relay.json")
        browser.add_cookie({"name": "login", "value": "cookie-of-carol", "path": "/"})
        browser.get(f"{served.relay.root}/")
        until(browser, "document.body.dataset.ready === 'true'")
        assert not browser.find_element(By.ID, "auth").is_displayed()
        browser.find_element(By.ID, "prompt").send_keys("hello there\n")
        last_reply_is(browser, "done")
        assert reply_texts(browser) == [default_reply("hello there", [])]
        assert users == ["carol"]
    finally:
        served.stop()


def test_a_reply_holding_html_is_shown_as_text(browser: Any, served: RelayThread) -> None:
    """A reply with <img onerror> and <script> shows those characters; no element is
    made from it and no script of it runs."""
    assert served.sim is not None
    hostile = '<img src=x onerror="window.pwned=1"><script>window.pwned=2</script><b>bold</b>'
    served.sim.reply = lambda prompt, history: hostile
    prompt = open_page(browser, served)
    prompt.send_keys("<i>hi</i>\n")
    last_reply_is(browser, "done")
    assert reply_texts(browser) == [hostile]
    assert (
        browser.execute_script("return document.querySelector('.user').textContent") == "<i>hi</i>"
    )
    assert (
        browser.execute_script(
            "return document.querySelectorAll('#log img, #log script, #log b, #log i').length"
        )
        == 0
    )
    assert browser.execute_script("return window.pwned") is None


def test_thoughts_and_citations_are_folded_under_the_reply(
    browser: Any, served: RelayThread
) -> None:
    """The app's thoughts and cited documents sit closed under the reply, each once."""
    prompt = open_page(browser, served)
    prompt.send_keys("hello there\n")
    last_reply_is(browser, "done")
    folded = browser.execute_script(
        "return [...document.querySelectorAll('.reply details')].map("
        "d => [d.className, d.open, d.hidden, d.querySelectorAll('li').length, d.textContent])"
    )
    (thoughts, refs) = folded
    assert thoughts[:3] == ["thoughts", False, False] and thoughts[3] >= 1
    assert refs[:4] == ["refs", False, False, 1]
    assert "[1] About the Bailian simulator" in refs[4]


def test_shift_enter_adds_a_line_and_enter_sends(browser: Any, served: RelayThread) -> None:
    """Shift+Enter puts a newline in the prompt; Enter sends both lines as one prompt."""
    from selenium.webdriver.common.keys import Keys

    prompt = open_page(browser, served)
    prompt.send_keys("line one", Keys.SHIFT, Keys.ENTER, Keys.SHIFT, "line two")
    assert browser.execute_script("return document.querySelectorAll('.turn').length") == 0
    prompt.send_keys(Keys.ENTER)
    last_reply_is(browser, "done")
    assert served.sim is not None
    assert served.sim.requests[-1].body["input"]["prompt"] == "line one\nline two"
    assert (
        browser.execute_script("return document.querySelector('.user').textContent")
        == "line one\nline two"
    )


def test_usable_at_phone_width(browser: Any, served: RelayThread) -> None:
    """At 390 px wide nothing scrolls sideways and the prompt, Send and Stop are on
    screen; a long unbroken word in a reply wraps."""
    assert served.sim is not None
    served.sim.reply = lambda prompt, history: "x" * 300
    served.sim.chunk_size = 100
    prompt = open_page(browser, served, size=(390, 844))
    prompt.send_keys("hello\n")
    last_reply_is(browser, "done")
    width = browser.execute_script("return document.documentElement.clientWidth")
    assert browser.execute_script("return document.documentElement.scrollWidth") <= width
    for element_id in ("prompt", "send", "stop", "new"):
        box = browser.execute_script(
            f"return document.getElementById('{element_id}').getBoundingClientRect().toJSON()"
        )
        assert box["left"] >= 0 and box["right"] <= width, element_id


def test_screenshot_of_a_conversation(browser: Any, served: RelayThread, tmp_path: Path) -> None:
    """A conversation with thoughts and citations opened, saved as a PNG (the README's
    picture when TYQW_RELAY_SCREENSHOT names where to keep it)."""
    prompt = open_page(browser, served, size=(900, 860))
    prompt.send_keys("你好，我叫小明\n")
    last_reply_is(browser, "done")
    prompt.send_keys("我叫什么名字？\n")
    last_reply_is(browser, "done")
    assert "小明" in reply_texts(browser)[-1]
    browser.execute_script(
        "const last = [...document.querySelectorAll('.reply')].pop();"
        "last.querySelectorAll('details').forEach(d => d.open = true);"
    )
    prompt.send_keys("给我讲讲杭州")
    path = tmp_path / "relay.png"
    assert browser.save_screenshot(str(path))
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    keep = os.environ.get(SCREENSHOT_ENV)
    if keep:
        shutil.copyfile(path, keep)
