"""Streamed exec results over HTTP, in-process: a real ActivityView fed updates while a client reads the stream.

The server is the node's own aiohttp application on loopback; only the activity actor is
replaced, by the view it would hand out, so the timing of events and results can be
driven exactly (results before their streamed events, pings, reconnects).
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from aiohttp import ClientSession
from aiohttp.test_utils import TestServer

from actors.activity.view import ActivityView
from node.api import activity as activity_api
from node.api.routing import ApiContext
from node.api.server import all_routes, build_app
from protocol.activity import ActivityRuntimeEvent, ActivityUpdate, ExeResult

pytestmark = pytest.mark.integration

KEY = "k" * 32


class _Done:
    def __init__(self, value: Any) -> None:
        self._value = value

    def get(self, timeout: float) -> Any:
        return self._value


class _Activity:
    """What the REST layer asks of the ActivityActor's proxy, for one activity."""

    def __init__(self, view: ActivityView, script: list[dict[str, Any]]) -> None:
        self.view_ = view
        self.script = script

    def view(self, activity_id: str) -> _Done:
        return _Done(self.view_)

    def exec(self, activity_id: str, commands: Any) -> _Done:
        self.view_.add_batch("b1")
        return _Done("b1")


def _result(index: int, last: bool, ok: bool = True) -> ExeResult:
    return ExeResult(index, 1_000 + index, "Ok" if ok else "Error", None, None, None if ok else "failed", last)


def _update(view: ActivityView, *results: ExeResult) -> None:
    view.apply(ActivityUpdate("a1", "ag", "Ready", "", "", (), 0, "b1", tuple(results)))


def _event(index: int, kind: str, data: str = "", code: int | None = None) -> ActivityRuntimeEvent:
    return ActivityRuntimeEvent("a1", "b1", index, 2_000 + index, kind, data, code, None)


async def _read(session: ClientSession, url: str, last_id: int | None = None) -> tuple[list[dict[str, Any]], int, list[int]]:
    """(runtime events, pings, event ids) of a whole stream."""
    headers = {"Authorization": f"Bearer {KEY}", "Accept": "text/event-stream"}
    if last_id is not None:
        headers["Last-Event-Id"] = str(last_id)
    events, pings, ids = [], 0, []
    async with session.get(url, headers=headers) as response:
        assert response.status == 200 and response.headers["Content-Type"] == "text/event-stream"
        async for raw in response.content:
            line = raw.decode().rstrip("\n")
            if line == ": ping":
                pings += 1
            elif line.startswith("id: "):
                ids.append(int(line[4:]))
            elif line.startswith("data: "):
                events.append(json.loads(line[6:]))
    return events, pings, ids


def test_a_stream_names_every_command_pings_and_resumes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(activity_api, "SSE_PING_S", 0.3)
    script = [{"deploy": {}}, {"start": {}}, {"run": {"entry_point": "hello", "args": [], "capture": {"stdout": {"stream": {}}}}}]

    async def scenario() -> None:
        view = ActivityView("a1", "ag", "0xP")
        fake = _Activity(view, script)
        ctx = ApiContext(node_id="0xR", node_name="r", ask_timeout_s=1.0, market=None, activity=fake)
        app = build_app(ctx, lambda token: object() if token == KEY else None, all_routes(with_payment=False))
        async with TestServer(app, host="127.0.0.1") as server, ClientSession() as session:
            # The batch is sent through the API, so the stream can name each command.
            async with session.post(server.make_url("/activity-api/v1/activity/a1/exec"),
                                    json={"text": json.dumps(script)}, headers={"Authorization": f"Bearer {KEY}"}) as r:
                assert r.status == 200 and await r.json() == "b1"
            url = server.make_url("/activity-api/v1/activity/a1/exec/b1")
            reader = asyncio.ensure_future(_read(session, url))
            await asyncio.sleep(0.8)  # nothing happens for a while: pings keep the stream open
            _update(view, _result(0, False), _result(1, False))
            await asyncio.sleep(0.1)
            view.add_event(_event(2, "started", "hello"))
            view.add_event(_event(2, "stdout", "hi\n"))
            # The run's result arrives before its finished event: the stream waits for the event.
            _update(view, _result(0, False), _result(1, False), _result(2, True))
            await asyncio.sleep(0.2)
            view.add_event(_event(2, "finished", code=0))
            events, pings, ids = await asyncio.wait_for(reader, 10)
            kinds = [(e["index"], next(iter(e["kind"]))) for e in events]
            assert kinds == [(0, "started"), (0, "finished"), (1, "started"), (1, "finished"),
                             (2, "started"), (2, "stdout"), (2, "finished")]
            assert [e["kind"]["started"]["command"] for e in events if "started" in e["kind"]] == script
            assert events[5]["kind"]["stdout"] == "hi\n" and events[6]["kind"]["finished"] == {"return_code": 0, "message": None}
            assert pings >= 1 and ids == list(range(1, 8))
            assert all(e["batchId"] == "b1" and e["timestamp"].endswith("+00:00") for e in events)
            # A client reconnecting after the fifth event gets the last two only.
            again, _, again_ids = await _read(session, url, last_id=5)
            assert again == events[5:] and again_ids == [6, 7]
            # Polling the same batch answers JSON, with the streamed output in the result.
            async with session.get(url, headers={"Authorization": f"Bearer {KEY}"}) as r:
                polled = await r.json()
            assert [p["index"] for p in polled] == [0, 1, 2] and polled[2]["stdout"] == "hi\n"

    asyncio.run(scenario())


def test_a_failed_command_ends_the_stream_with_its_code() -> None:
    async def scenario() -> None:
        view = ActivityView("a1", "ag", "0xP")
        view.add_batch("b1")
        ctx = ApiContext(node_id="0xR", node_name="r", ask_timeout_s=1.0, market=None, activity=_Activity(view, []))
        app = build_app(ctx, lambda token: object() if token == KEY else None, all_routes(with_payment=False))
        async with TestServer(app, host="127.0.0.1") as server, ClientSession() as session:
            _update(view, _result(0, False), _result(1, True, ok=False))
            events, _, _ = await asyncio.wait_for(_read(session, server.make_url("/activity-api/v1/activity/a1/exec/b1")), 10)
            finished = [e["kind"]["finished"] for e in events if "finished" in e["kind"]]
            assert finished == [{"return_code": 0, "message": None}, {"return_code": 1, "message": "failed"}]

    asyncio.run(scenario())
