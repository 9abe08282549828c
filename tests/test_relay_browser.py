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

from tyqw import Reply, Session
from tyqw.stores import MemoryStore
from tyqw.testing import Fault, default_reply

from .helpers import missing
from .relay_helpers import ALICE, BOB, RelayThread

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
WAIT = 15.0
SCREENSHOT_ENV = "TYQW_RELAY_SCREENSHOT"
"""Set to a path (docs/relay.png) to keep the relay page's screenshot from the test."""

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


RAG = {"pipeline_ids": ["kb-1"]}


@pytest.fixture
def served() -> Iterator[RelayThread]:
    relay = RelayThread(delay=0.05).start(turn_options={"rag_options": RAG})
    try:
        yield relay
    finally:
        relay.stop()


def core_replies(served: RelayThread, *prompts: str) -> list[Reply]:
    """The same turns as the page makes, one conversation, straight to the simulator
    with tyqw's Session: what tyqw itself shows of them."""
    sim = served.sim
    assert sim is not None

    async def turns() -> list[Reply]:
        delay, sim.delay = sim.delay, 0.0  # pacing changes no reply, only its timing
        try:
            async with Session(
                sim.app_id, api_key=sim.api_key, base_url=sim.base_url, store=MemoryStore()
            ) as session:
                options: Any = {
                    "rag_options": RAG,
                    "has_thoughts": True,
                    "incremental_output": True,
                }
                return [await session.send(prompt, **options) for prompt in prompts]
        finally:
            sim.delay = delay

    return served.call(turns())


def citations(browser: Any) -> list[str]:
    """The documents listed under the newest reply, in the order shown."""
    listed: list[str] = browser.execute_script(
        "return [...[...document.querySelectorAll('.reply')].pop()"
        ".querySelectorAll('details.refs li')].map(li => li.textContent)"
    )
    return listed


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
    seen: list[str] = browser.execute_script("return window.seen")
    prompt.send_keys("what's my name?\n")
    last_reply_is(browser, "done")
    first, second = core_replies(served, "my name is Ada", "what's my name?")
    partial = {text for text in seen if text and text != first.display_text}
    assert len(partial) >= 2, seen
    assert all(first.display_text.startswith(text) for text in partial)
    assert reply_texts(browser) == [first.display_text, second.display_text]
    assert second.display_text.startswith("Your name is Ada[4]. You told me earlier")


def test_new_conversation_forgets(browser: Any, served: RelayThread) -> None:
    """New conversation clears the page and the next turn starts without the context."""
    prompt = open_page(browser, served)
    prompt.send_keys("my name is Ada\n")
    last_reply_is(browser, "done")
    click(browser, "new")
    assert reply_texts(browser) == []
    prompt.send_keys("what's my name?\n")
    last_reply_is(browser, "done")
    assert served.sim is not None
    assert "session_id" not in served.sim.requests[-1].body["input"]
    [fresh] = core_replies(served, "what's my name?")
    assert "haven't told me your name" in fresh.display_text
    assert reply_texts(browser) == [fresh.display_text]


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
    assert reply_texts(browser) == [partial, "fine[4]."]


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


def prompts_shown(browser: Any) -> list[str]:
    texts: list[str] = browser.execute_script(
        "return [...document.querySelectorAll('.turn.user')].map(e => e.textContent)"
    )
    return texts


def test_a_reload_draws_the_conversation_again_and_goes_on(
    browser: Any, served: RelayThread
) -> None:
    """Chat, reload: the conversation is drawn as it was, citations and an error line
    included, and the next message continues it; another user's token sees none of it."""
    from selenium.webdriver.common.by import By

    sim = served.sim
    assert sim is not None and served.relay is not None
    prompt = open_page(browser, served)
    prompt.send_keys("my name is Ada\n")
    last_reply_is(browser, "done")
    sim.inject(Fault.stream_error(after=1, status=400, code="DataInspectionFailed"))
    prompt.send_keys("hello there\n")
    last_reply_is(browser, "error")
    prompt.send_keys("what's my name?\n")
    last_reply_is(browser, "done")
    replies, session_id = reply_texts(browser), sim.requests[-1].session_id
    error = "return document.querySelector('.reply .error').textContent"
    line = browser.execute_script(error)
    assert "code DataInspectionFailed" in line
    browser.refresh()
    until(browser, "document.body.dataset.ready === 'true'")
    assert prompts_shown(browser) == ["my name is Ada", "hello there", "what's my name?"]
    assert reply_texts(browser) == replies
    assert replies[-1].startswith("Your name is Ada[4].")
    assert "DataInspectionFailed" in browser.execute_script(error)
    assert citations(browser)  # the cited documents are listed again
    browser.find_element(By.ID, "prompt").send_keys("do you remember my name?\n")
    last_reply_is(browser, "done")
    assert sim.requests[-1].body["input"]["session_id"] == session_id
    assert reply_texts(browser)[-1].startswith("Your name is Ada[4].")

    browser.get(f"{served.relay.root}/#token={BOB}")
    browser.refresh()  # a new page load, as Bob's own browser would make
    until(browser, "document.body.dataset.ready === 'true'")
    assert prompts_shown(browser) == [] and reply_texts(browser) == []
    browser.find_element(By.ID, "prompt").send_keys("what's my name?\n")
    last_reply_is(browser, "done")
    assert "session_id" not in sim.requests[-1].body["input"]
    assert "haven't told me your name" in reply_texts(browser)[-1]


def test_a_relay_that_cannot_be_reached_is_said_in_a_users_words(
    browser: Any, served: RelayThread
) -> None:
    """The relay stops after the page loaded: sending shows what happened and what to do
    ("cannot be reached ... check your network connection"), not the browser's "Failed
    to fetch"; the prompt is usable again."""
    prompt = open_page(browser, served)
    assert served.relay is not None
    relay, served.relay = served.relay, None
    served.call(relay.__aexit__(None, None, None))
    prompt.send_keys("hello there\n")
    last_reply_is(browser, "error")
    line = browser.execute_script("return document.querySelector('.reply .error').textContent")
    assert line.startswith("error: the relay cannot be reached: check your network connection")
    assert "fetch" not in line.lower()
    assert browser.execute_script("return document.getElementById('prompt').disabled") is False


def test_a_refused_token_asks_for_one(browser: Any, served: RelayThread) -> None:
    """With a wrong token the page opens on the sign-in screen, focused on the code
    field, saying in plain words that the code was not accepted; a good code typed
    there opens the chat and the next send works."""
    from selenium.webdriver.common.by import By

    assert served.relay is not None
    browser.get(f"{served.relay.root}/#token=wrong-token-0123456789")
    until(browser, "document.body.dataset.ready === 'true'")
    until(browser, "!document.getElementById('auth').hidden")
    assert browser.find_element(By.ID, "auth").is_displayed()
    assert not browser.find_element(By.ID, "prompt").is_displayed()
    said = browser.find_element(By.CSS_SELECTOR, "#auth p").text
    assert said.startswith("This access code was not accepted.")
    assert browser.execute_script("return document.activeElement.id") == "token"
    browser.find_element(By.ID, "token").send_keys(ALICE)
    click(browser, "save-token")
    prompt = browser.find_element(By.ID, "prompt")
    prompt.send_keys("hello there\n")
    last_reply_is(browser, "done")


def test_sign_out_forgets_the_token_and_asks_for_it(browser: Any, served: RelayThread) -> None:
    """Sign out removes the code from the browser and shows the sign-in screen, focused
    on the code field; a reload still asks for it."""
    from selenium.webdriver.common.by import By

    open_page(browser, served)
    click(browser, "signout")
    assert browser.find_element(By.ID, "auth").is_displayed()
    assert browser.execute_script("return document.activeElement.id") == "token"
    assert browser.execute_script("return localStorage.getItem('tyqw.token')") is None
    assert served.relay is not None
    browser.get(f"{served.relay.root}/")
    until(browser, "document.body.dataset.ready === 'true'")
    assert browser.find_element(By.ID, "auth").is_displayed()
    assert browser.find_element(By.CSS_SELECTOR, "#auth h2").text == "Sign in to chat"
    assert browser.execute_script("return document.activeElement.id") == "token"


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
        # Every request the page made (its conversations, then the turn) was carol's.
        assert users and set(users) == {"carol"}
    finally:
        served.stop()


def test_a_reply_holding_html_is_shown_as_text(browser: Any, served: RelayThread) -> None:
    """A reply with <img onerror>, <script> and HTML where a citation marker would be
    shows those characters (its one real marker as [4]); no element is made from it and
    no script of it runs."""
    assert served.sim is not None
    hostile = (
        '<img src=x onerror="window.pwned=1"><script>window.pwned=2</script><b>bold</b>'
        '<ref>[<img src=y onerror="window.pwned=3">]</ref>'
    )
    served.sim.reply = lambda prompt, history: hostile
    prompt = open_page(browser, served)
    prompt.send_keys("<i>hi</i>\n")
    last_reply_is(browser, "done")
    # The simulator cites the reply once, at its end, as the service does.
    assert reply_texts(browser) == [hostile + "[4]"]
    assert [line.split("\n")[0] for line in citations(browser)] == [
        "[4] Citations (Bailian simulator handbook)"
    ]
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
    """The app's thoughts and the cited documents sit closed under the reply; markers
    read [n] and the documents are listed in the order the text cites them, as tyqw's
    Reply.display_text and Reply.citations have them."""
    prompt = open_page(browser, served)
    prompt.send_keys("hello there\n")
    last_reply_is(browser, "done")
    folded = browser.execute_script(
        "return [...document.querySelectorAll('.reply details')].map("
        "d => [d.className, d.open, d.hidden, d.querySelectorAll('li').length])"
    )
    assert folded == [["thoughts", False, False, 1], ["refs", False, False, 3]]
    [core] = core_replies(served, "hello there")
    assert reply_texts(browser) == [core.display_text]
    assert "<ref>" not in core.display_text and "[4]" in core.display_text
    shown = [line.split("\n") for line in citations(browser)]
    assert [heading for heading, *_ in shown] == [
        f"{c.marker} {c.title} ({c.doc_name})" for c in core.citations
    ]
    assert [c.marker for c in core.citations] == ["[4]", "[2]", "[3]"]  # not sorted
    assert [excerpt for _, *excerpt in shown] == [
        (c.excerpt or "").split("\n") for c in core.citations
    ]


def test_citation_markers_split_anywhere_read_as_tyqw_shows_them(
    browser: Any, served: RelayThread
) -> None:
    """Streamed one character per event, markers (several ids, spaces, not-quite
    markers, one left unfinished) never show half-made: every step the page shows is
    the start of the final text, which is tyqw's display_text, and the documents are
    tyqw's citations in the same order."""
    sim = served.sim
    assert sim is not None
    tricky = (
        "One<ref>[3]</ref>, two<ref>[5][1]</ref>, spaced<ref> [2] </ref>; a < b, "
        "<b>not</b> <ref>[]</ref> <ref>[x</ref> < ref>[1]</ref> [4] and <ref>[3]</ref> "
        "again, then <ref>[2"
    )
    sim.reply = lambda prompt, history: tricky
    sim.chunk_size, sim.delay = 1, 0.0
    prompt = open_page(browser, served)
    prompt.send_keys("cite things\n")
    last_reply_is(browser, "done")
    seen: list[str] = browser.execute_script("return window.seen")
    [core] = core_replies(served, "cite things")
    assert reply_texts(browser) == [core.display_text]
    assert all(core.display_text.startswith(text) for text in seen), seen
    assert [line.split(" ")[0] for line in citations(browser)] == [
        c.marker for c in core.citations
    ]
    # " [2] " reads [2], but the service lists no document for it.
    assert [c.marker for c in core.citations] == ["[3]", "[5]", "[1]"]
    assert "spaced[2]; a < b, <b>not</b> <ref>[]</ref>" in core.display_text


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
    """A conversation with thoughts and citations opened, saved as a PNG (the relay page's
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


@pytest.fixture
def plain() -> Iterator[RelayThread]:
    """A relay whose app cites nothing: the reply's text arrives as the simulator's
    reply function wrote it."""
    relay = RelayThread(delay=0.0).start()
    try:
        yield relay
    finally:
        relay.stop()


MARKDOWN = """## Steps to *try*

1. Install **tyqw**
   - with `pip`
2. Run it

| Command | Does |
|:--------|-----:|
| `tyqw serve` | the relay |
| `tyqw simulate` | the simulator |

See [the docs](https://example.com/tyqw "docs") or mail <x@y> to ~~nobody~~.

```python
print("你好")
x = 1 < 2
```
"""


def test_markdown_and_code_render(browser: Any, plain: RelayThread) -> None:
    """A Markdown reply shows as a heading, nested lists, an aligned table, a safe link,
    inline and fenced code in a monospace font; the code's Copy button copies it."""
    assert plain.sim is not None and plain.relay is not None
    plain.sim.reply = lambda prompt, history: MARKDOWN
    plain.sim.chunk_size = 7  # the renderer sees many half-written states
    browser.execute_cdp_cmd(
        "Browser.grantPermissions",
        {
            "origin": plain.relay.root,
            "permissions": ["clipboardReadWrite", "clipboardSanitizedWrite"],
        },
    )
    prompt = open_page(browser, plain)
    prompt.send_keys("show me markdown\n")
    last_reply_is(browser, "done")
    shown = browser.execute_script(
        """
        const text = [...document.querySelectorAll('.reply .text')].pop();
        const all = (selector) => [...text.querySelectorAll(selector)];
        const link = text.querySelector('a');
        return {
          heading: all('h2').map(e => e.textContent),
          emphasis: all('h2 em, li strong, del').map(e => e.tagName + ':' + e.textContent),
          items: all('ol > li').length, nested: all('ol > li > ul > li').map(e => e.textContent),
          header: all('th').map(e => e.textContent + '/' + (e.dataset.align || '')),
          cells: all('td').map(e => e.textContent),
          link: [link.textContent, link.getAttribute('href'), link.rel, link.target],
          inline: all(':not(pre) > code').map(e => e.textContent),
          code: all('pre code').map(e => e.textContent),
          language: text.querySelector('.code-bar .language').textContent,
          font: getComputedStyle(text.querySelector('pre code')).fontFamily,
          inlineFont: getComputedStyle(text.querySelector('td code')).fontFamily,
        };
        """
    )
    assert shown["heading"] == ["Steps to try"]
    assert shown["emphasis"] == ["EM:try", "STRONG:tyqw", "DEL:nobody"]
    assert shown["items"] == 2 and shown["nested"] == ["with pip"]
    assert shown["header"] == ["Command/", "Does/right"]
    assert shown["cells"] == ["tyqw serve", "the relay", "tyqw simulate", "the simulator"]
    assert shown["link"] == [
        "the docs",
        "https://example.com/tyqw",
        "noopener noreferrer",
        "_blank",
    ]
    assert shown["inline"] == ["pip", "tyqw serve", "tyqw simulate"]
    assert shown["code"] == ['print("你好")\nx = 1 < 2']
    assert shown["language"] == "python"
    assert "monospace" in shown["font"] and "monospace" in shown["inlineFont"]
    click_copy = "[...document.querySelectorAll('.reply .copy')].pop().click()"
    browser.execute_script(click_copy)
    until(browser, "[...document.querySelectorAll('.reply .copy')].pop().textContent === 'Copied'")
    copied = browser.execute_async_script(
        "const done = arguments[0]; navigator.clipboard.readText().then(done, e => done('!' + e))"
    )
    assert copied == 'print("你好")\nx = 1 < 2'


class Remote:
    """A web server standing in for a remote host: it records every request it gets."""

    def __init__(self) -> None:
        self.hits: list[str] = []
        self.root = ""
        self.runner: Any = None

    async def start(self) -> Remote:
        from aiohttp import web

        async def record(request: web.Request) -> web.Response:
            self.hits.append(str(request.rel_url))
            return web.Response(body=b"GIF89a", content_type="image/gif")

        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", record)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.root = f"http://127.0.0.1:{self.runner.addresses[0][1]}"
        return self

    async def stop(self) -> None:
        await self.runner.cleanup()


def test_a_hostile_reply_neither_runs_nor_loads_anything(browser: Any, plain: RelayThread) -> None:
    """A reply holding script tags, onerror images, javascript: and data: links, and
    Markdown images of a remote host runs no script (no window flag set), makes no
    request to that host, and leaves no element that could: its images read as
    "[image: ...]", its unsafe links as plain words."""
    assert plain.sim is not None
    remote = plain.call(Remote().start())
    try:
        r = remote.root
        hostile = "\n".join(
            [
                f'<img src="{r}/raw.gif" onerror="window.pwned=1"><script>window.pwned=2</script>',
                f"![tracker]({r}/md.gif) and ![inline](javascript:window.pwned=3)",
                "[click me](javascript:window.pwned=4) [data](data:text/html,<script>x</script>)",
                f'<iframe src="{r}/frame"></iframe><link rel=stylesheet href="{r}/x.css">',
                '<svg onload="window.pwned=5"></svg>',
                f'<a href="{r}/a" onclick="window.pwned=6">a</a>',
                f"[ok]({r}/page) `<b>code</b>`",
                "",
                "```html",
                f'<img src="{r}/fenced.gif" onerror="window.pwned=7">',
                "```",
                f"| <img src={r}/cell.gif> | ![c]({r}/cell2.gif) |",
                "|---|---|",
                "| [x](vbscript:msgbox) | y |",
            ]
        )
        plain.sim.reply = lambda prompt, history: hostile
        prompt = open_page(browser, plain)
        prompt.send_keys("<img src=x onerror=window.pwned=8>\n")
        last_reply_is(browser, "done")
        found = browser.execute_script(
            """
            const log = document.getElementById('log');
            return {
              dangerous: log.querySelectorAll(
                'img, script, iframe, link, svg, object, embed, style, video, audio, source'
              ).length,
              handlers: [...log.querySelectorAll('*')].flatMap(e => [...e.attributes])
                .filter(a => a.name.startsWith('on')).length,
              links: [...log.querySelectorAll('a')].map(a => [a.textContent, a.href, a.rel]),
              images: [...log.querySelectorAll('.image, a')].map(e => e.textContent)
                .filter(t => t.startsWith('[image')),
              loaded: performance.getEntriesByType('resource').map(e => e.name)
                .filter(name => !name.startsWith(location.origin)),
              pwned: window.pwned === undefined ? null : window.pwned,
            };
            """
        )
        assert found["dangerous"] == 0 and found["handlers"] == 0
        assert found["links"] == [
            ["[image: tracker]", f"{r}/md.gif", "noopener noreferrer"],
            ["ok", f"{r}/page", "noopener noreferrer"],
            ["[image: c]", f"{r}/cell2.gif", "noopener noreferrer"],
        ]
        assert "[image: inline]" in found["images"]
        assert found["loaded"] == [] and found["pwned"] is None
        assert "click me" in reply_texts(browser)[0]
        # The page asks its own relay for something now: had the reply made the browser
        # fetch anything, it would have been asked before this answer came back.
        browser.execute_async_script(
            "const done = arguments[0]; fetch('relay.json').then(() => done(), () => done())"
        )
        assert remote.hits == []
    finally:
        plain.call(remote.stop())


def chats(browser: Any) -> list[list[Any]]:
    """The conversation list: [title, chosen] per entry."""
    listed: list[list[Any]] = browser.execute_script(
        "return [...document.querySelectorAll('#chat-list li[data-id]')]"
        ".map(li => [li.querySelector('.open').textContent, li.classList.contains('chosen')])"
    )
    return listed


def test_switching_between_conversations_and_deleting_one(
    browser: Any, served: RelayThread
) -> None:
    """Two conversations are listed by their first prompt; choosing one draws its
    exchanges and the next turn continues it; deleting one removes it from the list."""
    prompt = open_page(browser, served)
    prompt.send_keys("my name is Ada\n")
    last_reply_is(browser, "done")
    click(browser, "new")
    prompt.send_keys("my name is Bob\n")
    last_reply_is(browser, "done")
    until(browser, "document.querySelectorAll('#chat-list li[data-id]').length === 2")
    assert chats(browser) == [["my name is Bob", True], ["my name is Ada", False]]
    browser.execute_script("document.querySelectorAll('#chat-list .open')[1].click()")
    until(browser, "document.querySelector('.user')?.textContent === 'my name is Ada'")
    assert chats(browser) == [["my name is Bob", False], ["my name is Ada", True]]
    assert len(reply_texts(browser)) == 1
    prompt.send_keys("what's my name?\n")
    last_reply_is(browser, "done")
    assert reply_texts(browser)[-1].startswith("Your name is Ada")
    # Ada's conversation is now the newest; delete Bob's.
    until(
        browser,
        "document.querySelector('#chat-list li[data-id] .open')?.textContent === 'my name is Ada'",
    )
    browser.execute_script("document.querySelectorAll('#chat-list .delete')[1].click()")
    until(browser, "document.querySelectorAll('#chat-list li[data-id]').length === 1")
    assert chats(browser) == [["my name is Ada", True]]
    assert len(reply_texts(browser)) == 2  # the conversation shown stays


def test_the_offline_note_shows_only_against_the_simulator(browser: Any) -> None:
    """Served against the offline simulator, the page says so above the chat; a relay
    given another key does not."""
    from selenium.webdriver.common.by import By

    for key, shown in (("sk-simulator", True), ("sk-a-real-looking-key", False)):
        served = RelayThread(delay=0.0, api_key=None).start(api_key=key)
        try:
            open_page(browser, served)
            note = browser.find_element(By.ID, "offline")
            assert note.is_displayed() is shown
            if shown:
                assert note.text.startswith("Offline demo: the replies come from tyqw's")
        finally:
            served.stop()


def test_the_page_speaks_the_browsers_language_and_sets_chinese_in_a_cjk_font(
    browser: Any, served: RelayThread
) -> None:
    """lang follows the browser's language; in Chinese the text's first font is a CJK
    face, and code stays monospace."""
    agent = browser.execute_script("return navigator.userAgent")
    browser.execute_cdp_cmd(
        "Emulation.setUserAgentOverride", {"userAgent": agent, "acceptLanguage": "zh-CN"}
    )
    try:
        open_page(browser, served)
        lang, language, font = browser.execute_script(
            "return [document.documentElement.lang, navigator.language,"
            " getComputedStyle(document.body).fontFamily]"
        )
    finally:
        browser.execute_cdp_cmd(
            "Emulation.setUserAgentOverride", {"userAgent": agent, "acceptLanguage": "en-US"}
        )
    assert lang == language == "zh-CN"
    assert font.startswith('"PingFang SC"'), font


PAGE_SHOTS_ENV = "TYQW_CHAT_PAGE_SCREENSHOTS"
"""Set to a folder (docs) to keep docs/chat-page.md's pictures from the test."""

HOW_TO = """To start the relay on your machine:

1. Install **tyqw**: `pip install tyqw`
2. Run it, then open the address it prints:

```bash
tyqw serve --port 8300
```

| Option | Meaning |
|--------|---------|
| `--tokens FILE` | who may chat |
| `--store redis://…` | share conversations between workers |

More in [the relay guide](https://example.com/tyqw/relay)."""


@pytest.mark.parametrize(
    ("layout", "size", "scheme"),
    [
        ("light", (1000, 720), "light"),
        ("dark", (1000, 720), "dark"),
        ("phone", (390, 780), "light"),
    ],
)
def test_screenshots_of_the_page(
    browser: Any,
    plain: RelayThread,
    tmp_path: Path,
    layout: str,
    size: tuple[int, int],
    scheme: str,
) -> None:
    """The page with two conversations and a Markdown reply, in the light and dark
    themes and at phone width, saved as PNGs (docs/chat-page-*.png when
    TYQW_CHAT_PAGE_SCREENSHOTS names the folder to keep them in)."""
    assert plain.sim is not None
    plain.sim.reply = lambda prompt, history: (
        HOW_TO if prompt.startswith("How") else default_reply(prompt, history)
    )
    browser.execute_cdp_cmd(
        "Emulation.setEmulatedMedia",
        {"features": [{"name": "prefers-color-scheme", "value": scheme}]},
    )
    try:
        prompt = open_page(browser, plain, size=size)
        # English: the machines that make these pictures may have no CJK font.
        prompt.send_keys("my name is Ada\n")
        last_reply_is(browser, "done")
        click(browser, "new")
        prompt.send_keys("How do I start the relay?\n")
        last_reply_is(browser, "done")
        until(browser, "document.querySelectorAll('#chat-list li[data-id]').length === 2")
        folded = browser.execute_script("return !document.getElementById('chats').open")
        assert folded is (layout == "phone")  # the list folds above the chat on a phone
        dark = browser.execute_script("return matchMedia('(prefers-color-scheme: dark)').matches")
        assert dark is (scheme == "dark")
        path = tmp_path / f"chat-page-{layout}.png"
        assert browser.save_screenshot(str(path))
    finally:
        browser.execute_cdp_cmd("Emulation.setEmulatedMedia", {"features": []})
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    keep = os.environ.get(PAGE_SHOTS_ENV)
    if keep:
        shutil.copyfile(path, Path(keep) / path.name)


def test_a_streaming_reply_redraws_only_its_last_block(browser: Any, plain: RelayThread) -> None:
    """While a reply streams in, a block already whole (a heading, a code block) keeps
    its element: the text above the one being written does not flicker or lose a
    selection."""
    assert plain.sim is not None
    plain.sim.reply = lambda prompt, history: (
        "## Title\n\n```\ncode\n```\n\n" + "words and more words " * 12
    )
    plain.sim.chunk_size = 3
    prompt = open_page(browser, plain)
    browser.execute_script(
        """
        window.kept = {};
        new MutationObserver(() => {
          const reply = [...document.querySelectorAll('.reply')].pop();
          if (!reply) return;
          const h2 = reply.querySelector('h2'), code = reply.querySelector('.code');
          if (!window.kept.h2 && h2?.textContent === 'Title') window.kept.h2 = h2;
          // The fence is closed once the paragraph after it has begun.
          if (!window.kept.code && reply.querySelector('p')) window.kept.code = code;
        }).observe(document.getElementById('log'), {subtree: true, childList: true,
                                                    characterData: true});
        """
    )
    prompt.send_keys("stream it\n")
    last_reply_is(browser, "done")
    kept = browser.execute_script(
        "const reply = [...document.querySelectorAll('.reply')].pop();"
        "return [window.kept.h2 === reply.querySelector('h2'),"
        " window.kept.code === reply.querySelector('.code'),"
        " reply.querySelectorAll('p').length]"
    )
    assert kept == [True, True, 1]


def test_the_conversation_a_client_kept_without_naming_one_is_shown_and_continued(
    browser: Any, served: RelayThread
) -> None:
    """A user who chatted through a client that names no conversation (tyqw's Session
    against the relay) finds that conversation drawn on a first visit and listed; the
    page's next message continues it."""
    assert served.sim is not None and served.relay is not None
    relay = served.relay

    async def chat() -> str:
        async with Session(
            relay.app_ids[0], api_key=ALICE, base_url=relay.base_url, store=MemoryStore()
        ) as session:
            reply = await session.send("my name is Ada")
            assert reply.session_id is not None
            return reply.session_id

    session_id = served.call(chat())
    browser.get(f"{relay.root}/relay.json")
    browser.execute_script("localStorage.clear()")  # a first visit
    prompt = open_page(browser, served)
    assert browser.execute_script("return document.querySelector('.user')?.textContent") == (
        "my name is Ada"
    )
    assert chats(browser) == [["my name is Ada", True]]
    assert (
        browser.execute_script("return document.querySelectorAll('#chat-list .delete').length")
        == 0
    )
    prompt.send_keys("what's my name?\n")
    last_reply_is(browser, "done")
    assert served.sim.requests[-1].body["input"]["session_id"] == session_id
    assert reply_texts(browser)[-1].startswith("Your name is Ada")


def test_a_reply_streamed_one_character_at_a_time_ends_as_drawn_whole(
    browser: Any, plain: RelayThread
) -> None:
    """Markdown streamed one character per event (every half-written table, fence,
    list and link along the way) ends as the same elements as the reply drawn whole
    from the transcript after a reload."""
    assert plain.sim is not None
    plain.sim.reply = lambda prompt, history: MARKDOWN + "\n> quoted *text*\n\n---\nend"
    plain.sim.chunk_size = 1
    prompt = open_page(browser, plain)
    prompt.send_keys("stream markdown\n")
    last_reply_is(browser, "done")
    shown = "return [...document.querySelectorAll('.reply .text')].pop().innerHTML"
    streamed = browser.execute_script(shown)
    browser.refresh()
    until(browser, "document.body.dataset.ready === 'true'")
    until(browser, "document.querySelectorAll('.reply').length === 1")
    assert browser.execute_script(shown) == streamed
    assert "<blockquote>" in streamed and "<hr>" in streamed and "<table>" in streamed
