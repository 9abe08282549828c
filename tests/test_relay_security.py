"""The relay spends the server's key: who may, for what, how often, and from where.

Each refusal is checked from the outside (status, DashScope error body, headers) and
for its effect: a refused request never reaches the upstream service.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from tyqw.relay import create_app, load_tokens
from tyqw.testing import BailianSimulator, Fault

from .relay_helpers import (
    ALICE,
    BOB,
    SSE_HEADERS,
    TOKENS,
    Relay,
    auth,
    body,
    outside_address,
    post,
)

CANARY = "sk-canary-relay-7d3f9b1c5e2a"


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param({}, id="no-token"),
        pytest.param({"Authorization": "Bearer wrong-token-00000000"}, id="wrong-token"),
        pytest.param({"Authorization": f"Basic {ALICE}"}, id="not-bearer"),
        pytest.param({"Authorization": "Bearer "}, id="empty"),
    ],
)
async def test_no_valid_token_is_401_and_nothing_reaches_upstream(
    relay: Relay, sim: BailianSimulator, http: aiohttp.ClientSession, headers: dict[str, str]
) -> None:
    """Without a valid relay token: HTTP 401 InvalidApiKey (even on a stream request)
    with WWW-Authenticate, and the service is never called."""
    answer = await post(http, relay.url(), body("hi"), {**headers, **SSE_HEADERS})
    assert answer.status == 401
    assert answer.json["code"] == "InvalidApiKey"
    assert answer.headers["WWW-Authenticate"].startswith("Bearer")
    assert sim.requests == []


async def test_an_app_id_the_relay_does_not_serve_is_404(
    relay: Relay, sim: BailianSimulator, http: aiohttp.ClientSession
) -> None:
    """An app id not configured is 404 to a user, 401 to someone without a token (which
    apps exist is not told to strangers); the service is never called."""
    other = relay.url("0123456789abcdef0123456789abcdef")
    answer = await post(http, other, body("hi"), auth())
    assert answer.status == 404 and answer.json["code"] == "NotFound"
    assert (await post(http, other, body("hi"))).status == 401
    assert sim.requests == []


async def test_another_users_session_id_is_refused(
    relay: Relay, sim: BailianSimulator, http: aiohttp.ClientSession
) -> None:
    """Bob cannot join Alice's conversation with her session_id, on a stream or not,
    and Alice's conversation is untouched."""
    alice = await post(http, relay.url(), body("my name is Alice"), auth(ALICE))
    alice_id = alice.json["output"]["session_id"]
    sent = len(sim.requests)
    as_json = await post(http, relay.url(), body("what's my name?", alice_id), auth(BOB))
    assert as_json.status == 400 and as_json.json["code"] == "InvalidParameter"
    streamed = await post(
        http, relay.url(), body("what's my name?", alice_id), auth(BOB, **SSE_HEADERS)
    )
    [error] = streamed.events
    assert (error.event, error.comment) == ("error", "HTTP_STATUS/400")
    assert len(sim.requests) == sent
    assert sim.history(alice_id) == [("my name is Alice", alice.json["output"]["text"])]


@pytest.mark.parametrize(
    ("payload", "names"),
    [
        pytest.param({"input": {"prompt": "x" * 8001}}, "8000", id="prompt-too-long"),
        pytest.param({"input": {"prompt": "hi", "messages": []}}, "input.messages", id="messages"),
        pytest.param(
            {"input": {"prompt": "hi"}, "parameters": {"rag_options": {}}},
            "parameters.rag_options",
            id="rag-options",
        ),
        pytest.param({"input": {"prompt": "hi"}, "workspace": "w"}, "workspace", id="top-level"),
        pytest.param(
            {"input": {"prompt": "hi", "biz_params": {"user_defined_tokens": {}}}},
            "input.biz_params.user_defined_tokens",
            id="biz-param-not-allowed",
        ),
        pytest.param(
            {"input": {"prompt": "hi"}, "parameters": {"has_thoughts": "yes"}},
            "parameters.has_thoughts",
            id="wrong-type",
        ),
        pytest.param({"input": {"prompt": "   "}}, "prompt", id="blank-prompt"),
        pytest.param({"input": {}}, "prompt", id="no-prompt"),
        pytest.param([1, 2], "object", id="not-an-object"),
        pytest.param(b"{not json", "body", id="not-json"),
        pytest.param(b"[" * 100_000 + b"]" * 100_000, "body", id="deeply-nested"),
    ],
)
async def test_a_body_beyond_what_a_chat_needs_is_refused_naming_the_field(
    relay: Relay, sim: BailianSimulator, http: aiohttp.ClientSession, payload: Any, names: str
) -> None:
    """Oversized prompts, unknown fields, biz_params keys not allowed and malformed
    bodies are a 400 InvalidParameter whose message names the problem; nothing is sent."""
    answer = await post(http, relay.url(), payload, auth())
    assert answer.status == 400
    assert answer.json["code"] == "InvalidParameter"
    assert names in answer.json["message"]
    assert sim.requests == []


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        pytest.param(b'{"input":{"prompt":"hi \\ud800"}}', "input.prompt", id="surrogate-prompt"),
        pytest.param(
            b'{"input":{"prompt":"hi","biz_params":{"city":"\\udc00x"}}}',
            "input.biz_params.city",
            id="surrogate-biz-param",
        ),
        pytest.param(
            b'{"input":{"prompt":"hi","biz_params":{"city":{"n":NaN}}}}',
            "input.biz_params.city.n",
            id="nan",
        ),
        pytest.param(
            b'{"input":{"prompt":"hi","biz_params":{"city":[1,-Infinity]}}}',
            "input.biz_params.city[1]",
            id="infinity",
        ),
        pytest.param(
            b'{"input":{"prompt":"hi","biz_params":{"city":1e400}}}',
            "input.biz_params.city",
            id="1e400",
        ),
    ],
)
@pytest.mark.parametrize("sse", [False, True], ids=["json", "sse"])
async def test_text_and_numbers_json_cannot_carry_are_a_400_naming_the_field(
    sim: BailianSimulator,
    http: aiohttp.ClientSession,
    caplog: pytest.LogCaptureFixture,
    raw: bytes,
    field: str,
    sse: bool,
) -> None:
    """A lone surrogate or NaN / Infinity / 1e400 in the prompt or an allowed biz_params
    value is the client's mistake: 400 InvalidParameter naming the field (in-band on a
    stream), no traceback logged, nothing sent upstream."""
    caplog.set_level(logging.WARNING)
    async with Relay(sim, biz_params=["city"]) as relay:
        answer = await post(http, relay.url(), raw, auth(**(SSE_HEADERS if sse else {})))
    if sse:
        assert answer.status == 200
        [frame] = answer.events
        assert frame.event == "error" and frame.comment == "HTTP_STATUS/400"
        error = json.loads(frame.data)
    else:
        assert answer.status == 400
        error = answer.json
    assert error["code"] == "InvalidParameter"
    assert error["message"].startswith(f"{field} ")
    assert sim.requests == []
    assert "Traceback" not in caplog.text and "Error handling request" not in caplog.text


async def test_an_empty_session_id_starts_a_new_conversation(
    relay: Relay, sim: BailianSimulator, http: aiohttp.ClientSession
) -> None:
    """input.session_id "" means no conversation yet, as on the simulator and in the
    TypeScript class: a new conversation, not a 400."""
    first = await post(http, relay.url(), body("my name is Alice"), auth())
    fresh = await post(http, relay.url(), body("what's my name?", ""), auth())
    assert fresh.status == 200, fresh.raw
    assert fresh.json["output"]["session_id"] != first.json["output"]["session_id"]
    assert "session_id" not in sim.requests[-1].body["input"]


async def test_an_oversized_body_is_refused_without_reading_it_all(
    relay: Relay, sim: BailianSimulator, http: aiohttp.ClientSession
) -> None:
    """A body far past the cap is refused with a message saying the limit."""
    answer = await post(
        http, relay.url(), b'{"input":{"prompt":"' + b"x" * 4_000_000 + b'"}}', auth()
    )
    assert answer.status == 400
    assert "larger than" in answer.json["message"]
    assert sim.requests == []


async def test_allowed_biz_params_and_options_reach_the_service(
    sim: BailianSimulator, http: aiohttp.ClientSession
) -> None:
    """What the operator allows (biz_params keys, has_thoughts) is passed on as sent:
    an app on a reasoning model then answers with its thinking."""
    sim.reasoning = True
    async with Relay(sim, biz_params=["user_prompt_params"]) as relay:
        payload = {
            "input": {"prompt": "hi", "biz_params": {"user_prompt_params": {"city": "杭州"}}},
            "parameters": {"has_thoughts": True},
            "model": "",
            "debug": {},
        }
        answer = await post(http, relay.url(), payload, auth())
    assert answer.status == 200
    assert [t["action_type"] for t in answer.json["output"]["thoughts"]] == ["reasoning"]
    sent = sim.requests[-1].body
    assert sent["input"]["biz_params"] == {"user_prompt_params": {"city": "杭州"}}
    assert sent["parameters"]["has_thoughts"] is True


async def test_the_rate_limit_is_429_with_retry_after_per_user(
    sim: BailianSimulator, http: aiohttp.ClientSession
) -> None:
    """rate=3: a user's fourth turn in a minute is 429 Throttling with Retry-After (the
    seconds until one more turn is allowed); another user is not affected."""
    async with Relay(sim, rate=3) as relay:
        statuses = [
            (await post(http, relay.url(), body("hi"), auth(ALICE))).status for _ in range(4)
        ]
        throttled = await post(http, relay.url(), body("hi"), auth(ALICE, **SSE_HEADERS))
        bob = await post(http, relay.url(), body("hi"), auth(BOB))
    assert statuses == [200, 200, 200, 429]
    assert throttled.status == 429 and throttled.json["code"] == "Throttling"
    assert 1 <= int(throttled.headers["Retry-After"]) <= 20
    assert 0 < int(throttled.headers["retry-after-ms"]) <= 20_000
    assert bob.status == 200
    assert len(sim.requests) == 4


async def test_the_rate_limit_is_shared_by_relay_workers_through_redis(
    sim: BailianSimulator, http: aiohttp.ClientSession, redis_url: str
) -> None:
    """Two relay workers on one Redis store share each user's limit: three turns in all
    pass, whichever worker they hit, and the fourth is refused by either."""
    async with (
        Relay(sim, rate=3, store=redis_url) as one,
        Relay(sim, rate=3, store=redis_url) as two,
    ):
        statuses = []
        for worker in (one, two, one, two):
            statuses.append((await post(http, worker.url(), body("hi"), auth(ALICE))).status)
        other = await post(http, one.url(), body("hi"), auth(ALICE))
        bob = await post(http, two.url(), body("hi"), auth(BOB))
    assert statuses == [200, 200, 200, 429]
    assert other.status == 429 and int(other.headers["Retry-After"]) >= 1
    assert bob.status == 200


async def test_redis_keys_of_the_rate_limit_expire(
    sim: BailianSimulator, http: aiohttp.ClientSession, redis_url: str
) -> None:
    """The limit keeps one Redis key per user, which expires once the bucket is full."""
    import redis.asyncio as redis

    async with Relay(sim, rate=60, store=redis_url) as relay:
        await post(http, relay.url(), body("hi"), auth(ALICE))
    client = redis.from_url(redis_url)
    try:
        keys = await client.keys("tyqw:relay:rate:*")
        assert keys == [b"tyqw:relay:rate:alice"]
        assert 0 < await client.pttl(keys[0]) <= 1000
    finally:
        await client.aclose()


async def test_redis_unreachable_refuses_turns_instead_of_dropping_the_limit(
    sim: BailianSimulator, http: aiohttp.ClientSession, redis_process: Any, redis_url: str
) -> None:
    """With the shared limit's Redis down the relay answers 503 and spends nothing."""
    async with Relay(sim, rate=3, store=redis_url) as relay:
        redis_process.stop()
        answer = await post(http, relay.url(), body("hi"), auth(ALICE))
    assert answer.status == 503 and answer.json["code"] == "ServiceUnavailable"
    assert sim.requests == []


async def test_cors_preflight_from_an_unlisted_origin_gets_no_allow_headers(
    sim: BailianSimulator, http: aiohttp.ClientSession
) -> None:
    """A preflight from a listed origin is allowed for POST with Authorization; one from
    any other origin gets no Access-Control-Allow-* header at all."""
    preflight = {
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization,content-type",
    }
    async with Relay(sim, cors=["https://chat.example.com"]) as relay:
        async with http.options(
            relay.url(), headers={"Origin": "https://chat.example.com", **preflight}
        ) as listed:
            assert listed.status == 204
            assert listed.headers["Access-Control-Allow-Origin"] == "https://chat.example.com"
            assert "authorization" in listed.headers["Access-Control-Allow-Headers"].lower()
            assert "POST" in listed.headers["Access-Control-Allow-Methods"]
        async with http.options(
            relay.url(), headers={"Origin": "https://evil.example", **preflight}
        ) as unlisted:
            assert not [
                h for h in unlisted.headers if h.lower().startswith("access-control-allow")
            ]


async def test_a_request_from_an_unlisted_origin_is_refused_before_it_spends_anything(
    sim: BailianSimulator, http: aiohttp.ClientSession
) -> None:
    """A browser POST from another site (even one that skips the preflight) is 403; a
    listed origin's gets its Access-Control-Allow-Origin; the relay's own page's passes."""
    async with Relay(sim, cors=["https://chat.example.com"]) as relay:
        evil = await post(http, relay.url(), body("hi"), auth(Origin="https://evil.example"))
        listed = await post(http, relay.url(), body("hi"), auth(Origin="https://chat.example.com"))
        own = await post(http, relay.url(), body("hi"), auth(Origin=relay.root))
    assert evil.status == 403 and "Access-Control-Allow-Origin" not in evil.headers
    assert listed.status == 200
    assert listed.headers["Access-Control-Allow-Origin"] == "https://chat.example.com"
    assert own.status == 200
    assert len(sim.requests) == 2


def test_a_relay_without_authentication_must_say_so() -> None:
    """create_app() with neither tokens nor authenticate refuses to build unless
    allow_anonymous=True is passed."""
    with pytest.raises(ValueError, match="no authentication"):
        create_app(["app"], api_key="sk-test", base_url="http://127.0.0.1:9/api/v1")


async def test_an_anonymous_relay_answers_only_to_loopback_host_names(
    sim: BailianSimulator, http: aiohttp.ClientSession
) -> None:
    """Without authentication every request is the user 'local', and only a loopback
    Host is answered: a DNS-rebinding page (Host: evil.example) is refused."""
    async with Relay(sim, allow_anonymous=True) as relay:
        local = await post(http, relay.url(), body("hi"))
        rebound = await post(http, relay.url(), body("hi"), {"Host": "evil.example:8000"})
        async with http.get(
            f"{relay.root}/relay.json", headers={"Host": "evil.example"}
        ) as settings:
            assert settings.status == 403
        async with http.get(f"{relay.root}/relay.json") as settings:
            assert (await settings.json())["auth"] == "none"
    assert local.status == 200
    assert rebound.status == 403 and rebound.json["code"] == "AccessDenied"
    assert len(sim.requests) == 1


async def test_an_anonymous_relay_refuses_a_remote_peer_that_claims_a_loopback_host(
    sim: BailianSimulator, http: aiohttp.ClientSession
) -> None:
    """Listening on an address other than loopback, an anonymous relay refuses a peer
    that is not on loopback even when it sends Host: localhost (or 127.0.0.1)."""
    address = outside_address()
    async with Relay(sim, allow_anonymous=True, host=address) as relay:
        answers = [
            await post(http, relay.url(), body("hi"), {"Host": host})
            for host in ("localhost", "127.0.0.1:8000", "[::1]")
        ]
        async with http.get(f"{relay.root}/relay.json", headers={"Host": "localhost"}) as got:
            assert got.status == 403
    assert [a.status for a in answers] == [403, 403, 403]
    assert {a.json["code"] for a in answers} == {"AccessDenied"}
    assert sim.requests == []


async def test_the_authenticate_hook_names_the_user(
    sim: BailianSimulator, http: aiohttp.ClientSession
) -> None:
    """An async authenticate(request) decides who the user is; None is a 401."""

    async def authenticate(request: web.Request) -> str | None:
        await asyncio.sleep(0)
        return {"Bearer let-me-in": "carol"}.get(request.headers.get("Authorization", ""))

    async with Relay(sim, authenticate=authenticate) as relay:
        async with http.get(f"{relay.root}/relay.json") as settings:
            assert (await settings.json())["auth"] == "custom"
        ok = await post(
            http, relay.url(), body("my name is Carol"), {"Authorization": "Bearer let-me-in"}
        )
        refused = await post(http, relay.url(), body("hi"), {"Authorization": "Bearer nope"})
    assert ok.status == 200 and refused.status == 401


def test_tokens_files_are_read_and_bad_ones_refused(tmp_path: Any) -> None:
    """A tokens file maps tokens to users; a short token, a duplicate or a malformed line
    is refused with the line number."""
    good = tmp_path / "tokens"
    good.write_text(f"# users\n{ALICE} alice\n\n{BOB}   bob  # comment\n")
    assert load_tokens(good) == TOKENS
    for content, message in [
        ("short alice\n", "at least 16"),
        (f"{ALICE} alice\n{ALICE} bob\n", "line 2: this token is already listed"),
        (f"{ALICE}\n", "line 1: expected"),
        ("# nothing\n", "no tokens"),
    ]:
        bad = tmp_path / "bad"
        bad.write_text(content)
        with pytest.raises(ValueError, match=message):
            load_tokens(bad)


async def test_the_upstream_key_appears_in_no_answer_header_or_log(
    http: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture
) -> None:
    """With a recognisable key: successes, upstream errors, refusals and an unreachable
    service; neither any answer (body or header) nor any log line of tyqw or aiohttp
    holds the key, and the service only ever sees the key, never a relay token."""
    caplog.set_level(logging.DEBUG)
    seen: list[str] = []
    async with (
        BailianSimulator(api_key=CANARY) as sim,
        Relay(sim, session_options={"max_retries": 0}) as relay,
    ):
        sim.inject(Fault.http(401))
        sim.inject(Fault.stream_error(after=1, status=500))
        for headers in (auth(), auth(**SSE_HEADERS), auth(**SSE_HEADERS), auth(), {}, auth(BOB)):
            answer = await post(http, relay.url(), body("hi"), headers)
            seen.append(answer.raw.decode() + json.dumps(dict(answer.headers)))
        assert {r.headers["authorization"] for r in sim.requests} == {f"Bearer {CANARY}"}
        await sim.aclose()
        answer = await post(http, relay.url(), body("hi"), auth(**SSE_HEADERS))
        seen.append(answer.raw.decode() + json.dumps(dict(answer.headers)))
    assert any("InvalidApiKey" in s for s in seen) and any("ServiceUnavailable" in s for s in seen)
    for text in [*seen, caplog.text]:
        assert CANARY not in text
        assert ALICE not in text and BOB not in text


async def test_a_key_the_upstream_quotes_never_leaves_the_relay(
    http: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture
) -> None:
    """An upstream error that quotes the key (retried HTTP error, in-band error frame,
    gateway page) reaches the client and the log (retry lines at INFO included) with
    the key replaced by ***, never the key."""
    caplog.set_level(logging.DEBUG)
    quoted = f"the key {CANARY} is not valid here"
    async with (
        BailianSimulator(api_key=CANARY) as sim,
        Relay(sim, session_options={"max_retries": 1}) as relay,
    ):
        sim.inject(Fault.http(500, "InternalError", quoted))  # retried: logged at INFO
        sim.inject(Fault.http(500, "InternalError", quoted))
        as_json = await post(http, relay.url(), body("hi"), auth())
        sim.inject(
            Fault.stream_error(after=1, status=400, code="InvalidParameter", message=quoted)
        )
        in_band = await post(http, relay.url(), body("hi"), auth(**SSE_HEADERS))
        sim.inject(Fault.content_type("text/html", f"<p>{quoted}</p>".encode(), status=401))
        page = await post(http, relay.url(), body("hi"), auth())
    assert as_json.status == 500 and as_json.json["message"] == "the key *** is not valid here"
    assert json.loads(in_band.events[-1].data)["message"] == "the key *** is not valid here"
    assert page.status == 502
    assert "retrying" in caplog.text and "the key *** is not valid" in caplog.text
    for text in (as_json.raw.decode(), in_band.raw.decode(), page.raw.decode(), caplog.text):
        assert CANARY not in text


@pytest.mark.parametrize("sse", [False, True], ids=["json", "sse"])
@pytest.mark.parametrize(
    ("content_type", "page"),
    [
        pytest.param(
            "text/html",
            b"<html><h1>502 Bad Gateway</h1>upstream 10.20.30.40:8080 (api.corp.internal)</html>",
            id="html",
        ),
        pytest.param(
            "application/json", b'{"message": "upstream 10.20.30.40 corp.internal"}', id="json"
        ),
    ],
)
async def test_a_gateway_page_reaches_the_client_as_a_fixed_message_with_the_request_id(
    sim: BailianSimulator,
    http: aiohttp.ClientSession,
    caplog: pytest.LogCaptureFixture,
    content_type: str,
    page: bytes,
    sse: bool,
) -> None:
    """An upstream error answer that is not the service's own JSON (a gateway's page
    naming internal hosts): a fixed 502 message with the relay's request id; the page's
    words stay in the relay's log."""
    caplog.set_level(logging.WARNING, logger="tyqw.relay")
    async with Relay(sim, session_options={"max_retries": 0}) as relay:
        sim.inject(Fault.content_type(content_type, page, status=502))
        answer = await post(http, relay.url(), body("hi"), auth(**(SSE_HEADERS if sse else {})))
    if sse:
        [frame] = answer.events
        assert frame.comment == "HTTP_STATUS/502"
        error = json.loads(frame.data)
    else:
        assert answer.status == 502
        error = answer.json
    assert error["code"] == "InternalError"
    assert error["message"] == (
        "The Bailian service (or a gateway before it) answered HTTP 502 without a Bailian error."
    )
    assert error["request_id"] == answer.headers["x-request-id"]
    assert "10.20.30.40" not in answer.raw.decode() and "corp.internal" not in answer.raw.decode()
    assert error["request_id"] in caplog.text and "corp.internal" in caplog.text


async def test_token_guessing_is_throttled_per_address_and_a_typo_is_not(
    relay: Relay,
    sim: BailianSimulator,
    http: aiohttp.ClientSession,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Two mistyped tokens then the right one: answered at once. Ten wrong tokens in a
    minute: the address is refused with 429 and Retry-After, the right token included,
    without the service being called; the log says so once, without a token."""
    caplog.set_level(logging.DEBUG)
    guesses = [f"guess-{n:02d}-0000000000000" for n in range(12)]
    for guess in guesses[:2]:
        assert (await post(http, relay.url(), body("hi"), auth(guess))).status == 401
    assert (await post(http, relay.url(), body("hi"), auth())).status == 200
    statuses = [
        (await post(http, relay.url(), body("hi"), auth(guess))).status for guess in guesses[2:]
    ]
    assert statuses == [401] * 8 + [429, 429]
    refused = await post(http, relay.url(), body("hi"), auth())
    assert refused.status == 429 and refused.json["code"] == "Throttling"
    assert 1 <= int(refused.headers["Retry-After"]) <= 60
    assert len(sim.requests) == 1
    lines = [r.getMessage() for r in caplog.records if "authentication" in r.getMessage()]
    assert len(lines) == 1 and "a failed authentication from 127.0.0.1" in lines[0]
    assert not any(guess in caplog.text for guess in guesses) and ALICE not in caplog.text
