"""FakeBotAPI speaks the Telegram Bot API over real loopback HTTP and injects Telegram's failures."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from tether.testing import FakeBotAPI, FakeClock


@pytest.fixture
async def api():
    async with FakeBotAPI() as server:
        yield server


@pytest.fixture
async def http(api):
    async with httpx.AsyncClient(base_url=api.url, timeout=10) as client:
        yield client


def path(api: FakeBotAPI, method: str, token: str | None = None) -> str:
    return f"/bot{token or api.token}/{method}"


async def test_get_me_and_unknown_token_401(api, http):
    """getMe answers the bot's User; an unknown token gets Telegram's exact 401 body."""
    r = await http.get(path(api, "getMe"))
    assert r.status_code == 200 and r.json()["ok"] is True
    assert r.json()["result"]["id"] == 123456789 and r.json()["result"]["is_bot"] is True
    r = await http.post(path(api, "getMe", "999:nope"))
    assert r.status_code == 401
    assert r.json() == {"ok": False, "error_code": 401, "description": "Unauthorized"}


async def test_revoke_then_add_token_again(api, http):
    """revoke() makes a valid token 401; add_token() accepts it again."""
    api.revoke(api.token)
    assert (await http.post(path(api, "getMe"))).status_code == 401
    api.add_token(api.token)
    assert (await http.post(path(api, "getMe"))).status_code == 200
    assert [r.authorized for r in api.calls("getMe")] == [False, True]


async def test_long_poll_returns_as_soon_as_an_update_is_queued(api, http):
    """A getUpdates with timeout=30 answers when push_message() queues an update, not at the timeout."""
    poll = asyncio.create_task(http.post(path(api, "getUpdates"), json={"timeout": 30}))
    await api.wait_for_requests("getUpdates")
    assert not poll.done()
    update = api.push_message("hello", chat_id=42)
    r = await asyncio.wait_for(poll, 5)
    assert r.json()["result"] == [update]
    assert update["update_id"] == 1 and update["message"]["chat"]["id"] == 42
    assert update["message"]["text"] == "hello"


async def test_empty_long_poll_ends_at_its_timeout(api, http):
    """With nothing queued a long poll answers an empty list once its timeout passes."""
    r = await http.get(path(api, "getUpdates"), params={"timeout": "0.05"})
    assert r.json() == {"ok": True, "result": []}


async def test_offset_confirms_updates_below_it(api, http):
    """Updates below offset are forgotten; without offset they are repeated; limit caps the batch."""
    for text in ("a", "b", "c"):
        api.push_message(text)
    r = await http.post(path(api, "getUpdates"), json={"limit": 2})
    assert [u["update_id"] for u in r.json()["result"]] == [1, 2]
    r = await http.post(path(api, "getUpdates"))
    assert [u["update_id"] for u in r.json()["result"]] == [1, 2, 3]  # nothing confirmed yet
    r = await http.post(path(api, "getUpdates"), data={"offset": "3"})  # form-encoded, like many clients
    assert [u["update_id"] for u in r.json()["result"]] == [3]
    assert [u["update_id"] for u in api.pending()] == [3]
    api.push_message("d")
    r = await http.post(path(api, "getUpdates"), json={"offset": -1})
    assert [u["update_id"] for u in r.json()["result"]] == [4]


async def test_multipart_and_query_parameters_are_read(api, http):
    """Parameters arrive the ways real clients send them: multipart forms and query strings too."""
    r = await http.post(path(api, "sendMessage"), data={"chat_id": "5", "text": "multi"}, files={"x": ("x", b"1")})
    assert r.status_code == 200 and r.json()["result"]["text"] == "multi"
    r = await http.get(path(api, "sendMessage"), params={"chat_id": "5", "text": "query"})
    assert r.status_code == 200 and [m["text"] for m in api.sent] == ["multi", "query"]


async def test_fail_next_429_has_telegram_shape(api, http):
    """fail_next() answers 429 with description and parameters.retry_after exactly like Telegram."""
    api.fail_next(1, status=429, retry_after=3)
    r = await http.post(path(api, "sendMessage"), json={"chat_id": 1, "text": "x"})
    assert r.status_code == 429
    assert r.json() == {"ok": False, "error_code": 429, "description": "Too Many Requests: retry after 3",
                        "parameters": {"retry_after": 3}}
    assert (await http.post(path(api, "sendMessage"), json={"chat_id": 1, "text": "x"})).status_code == 200


async def test_fail_next_5xx_by_method_and_html_body(api, http):
    """5xx injection targets one method; body= sends a non-JSON page as nginx does."""
    api.fail_next(2, status=502, method="getUpdates")
    api.fail_next(1, status=503, body="<html>503</html>")
    r = await http.post(path(api, "getMe"))
    assert r.status_code == 503 and r.text == "<html>503</html>"
    assert (await http.post(path(api, "getMe"))).status_code == 200
    for _ in range(2):
        r = await http.post(path(api, "getUpdates"))
        assert r.status_code == 502 and r.json()["error_code"] == 502 and r.json()["description"] == "Bad Gateway"
    assert (await http.post(path(api, "getUpdates"))).status_code == 200


async def test_send_message_records_and_validates(api, http):
    """sendMessage returns a Message with message_id, records it; bad input gets 400, a block 403."""
    r = await http.post(path(api, "sendMessage"), json={"chat_id": 7, "text": "hi", "parse_mode": "HTML"})
    message = r.json()["result"]
    assert message["message_id"] >= 1 and message["chat"]["id"] == 7 and message["text"] == "hi"
    assert api.sent == [message]
    r = await http.post(path(api, "sendMessage"), json={"chat_id": 7})
    assert r.status_code == 400 and r.json()["description"] == "Bad Request: message text is empty"
    r = await http.post(path(api, "sendMessage"), json={"text": "x"})
    assert r.status_code == 400
    api.block(8)
    r = await http.post(path(api, "sendMessage"), params={"chat_id": "8", "text": "x"})
    assert r.status_code == 403 and "blocked" in r.json()["description"]
    assert len(api.sent) == 1
    assert api.counts["sendMessage"] == 4


async def test_second_poller_terminates_the_first_with_409(api, http):
    """Like Telegram, a newer getUpdates ends a pending one with 409 Conflict."""
    first = asyncio.create_task(http.post(path(api, "getUpdates"), json={"timeout": 30}))
    await api.wait_for_requests("getUpdates")
    async with httpx.AsyncClient(base_url=api.url) as other:
        second = asyncio.create_task(other.post(path(api, "getUpdates"), json={"timeout": 0.05}))
        r = await asyncio.wait_for(first, 5)
        assert r.status_code == 409 and "terminated by other getUpdates" in r.json()["description"]
        assert (await second).status_code == 200


async def test_webhook_blocks_get_updates_until_deleted(api, http):
    """While a webhook is set getUpdates is 409; deleteWebhook clears it and keeps pending updates."""
    api.push_message("kept")
    api.set_webhook("https://example.invalid/hook")
    r = await http.post(path(api, "getUpdates"))
    assert r.status_code == 409 and "webhook is active" in r.json()["description"]
    assert (await http.post(path(api, "deleteWebhook"))).json() == {"ok": True, "result": True}
    r = await http.post(path(api, "getUpdates"))
    assert [u["message"]["text"] for u in r.json()["result"]] == ["kept"]


async def test_drop_next_and_drop_connections_break_the_socket(api, http):
    """drop_next() aborts a request without answer; drop_connections() aborts a pending long poll."""
    api.drop_next(1, method="getMe")
    with pytest.raises(httpx.TransportError):
        await http.post(path(api, "getMe"))
    poll = asyncio.create_task(http.post(path(api, "getUpdates"), json={"timeout": 30}))
    await api.wait_for_requests("getUpdates")
    assert api.drop_connections() >= 1
    with pytest.raises(httpx.TransportError):
        await asyncio.wait_for(poll, 5)
    assert (await http.post(path(api, "getMe"))).status_code == 200


async def test_delay_next_holds_the_answer(api, http):
    """delay_next() holds a request before answering it."""
    api.delay_next(0.3, method="getMe")
    call = asyncio.create_task(http.post(path(api, "getMe")))
    await api.wait_for_requests("getMe")
    await asyncio.sleep(0.05)
    assert not call.done()
    assert (await asyncio.wait_for(call, 5)).status_code == 200


async def test_unknown_method_404_and_bad_json_400(api, http):
    """An unknown method gets 404 Not Found; an unreadable body gets 400 naming the problem."""
    r = await http.post(path(api, "sendSticker"))
    assert r.status_code == 404 and r.json()["description"] == "Not Found"
    r = await http.post(path(api, "getUpdates"), content=b"{", headers={"content-type": "application/json"})
    assert r.status_code == 400 and "JSON" in r.json()["description"]


async def test_timestamps_use_the_given_clock_and_tokens_are_not_recorded():
    """Request times come from the injected clock; the request log never holds the token."""
    clock = FakeClock(start=100.0)
    async with FakeBotAPI("42:SECRET-token-value-abcdefghij", clock=clock) as api:
        async with httpx.AsyncClient(base_url=api.url) as http:
            await http.post(path(api, "getMe"))
            await clock.advance(5)
            await http.post(path(api, "getMe"))
        assert api.times("getMe") == [100.0, 105.0]
        assert "SECRET" not in repr(api.requests) and "SECRET" not in repr(api)


async def test_close_ends_pending_polls_and_leaves_no_task():
    """close() answers or aborts pending long polls and awaits every connection handler."""
    api = await FakeBotAPI().start()
    async with httpx.AsyncClient(base_url=api.url) as http:
        poll = asyncio.create_task(http.post(path(api, "getUpdates"), json={"timeout": 30}))
        await api.wait_for_requests("getUpdates")
        await asyncio.wait_for(api.close(), 5)
        result = await asyncio.gather(poll, return_exceptions=True)
        assert isinstance(result[0], (httpx.Response, httpx.TransportError))
    assert not api._handlers
    with pytest.raises(RuntimeError):
        api.url
