"""activity-api v1: activities, exe-script batches (polled or streamed as server-sent events), state and usage."""

from __future__ import annotations

import json
import time
from typing import Any

from aiohttp import web

from actors.activity.actor import ActivityNotFoundError
from node.api import models
from node.api.errors import ApiError
from node.api.routing import ApiContext, Route, body_of, json_response
from node.api.validation import MAX_POLL_S, exe_script, query_float, query_int

__all__ = ["activity_routes", "PREFIX", "SSE_PING_S"]

PREFIX = "/activity-api/v1"
SSE_PING_S = 15.0
_FINISH_GRACE_S = 2.0
_MAX_SCRIPTS = 10_000
_ENDED = ("Terminated", "Unresponsive")


_MAX_VIEWS = 10_000


async def _view(ctx: ApiContext, activity_id: str) -> Any:
    # A view is one object for the activity's whole life (the activity actor updates it in
    # place, thread-safely): kept here, exec and results calls skip an actor round trip.
    views: dict[str, Any] = ctx.extra.setdefault("views", {})
    view = views.get(activity_id)
    if view is not None:
        return view
    try:
        view = await ctx.call(ctx.activity.view, activity_id)
    except ActivityNotFoundError:
        raise ApiError(404, f"activity {activity_id} not found") from None
    views[activity_id] = view
    while len(views) > _MAX_VIEWS:
        del views[next(iter(views))]
    return view


async def create_activity(ctx: ApiContext, request: web.Request) -> web.Response:
    """POST /activity: start an activity under an approved agreement."""
    body = await body_of(request)
    bare = isinstance(body, str)
    if bare:
        agreement_id = body
    elif isinstance(body, dict):
        agreement_id = body.get("agreementId")
        if not isinstance(agreement_id, str):
            raise ApiError(400, "the request needs agreementId, a string")
        pub_key = body.get("requestorPubKey")
        if pub_key is not None:
            raise ApiError(400, "requestorPubKey (secure exe-units) is not supported by this node")
    else:
        raise ApiError(400, "the request body is the agreement id, a JSON string, or {\"agreementId\": ...}")
    if not agreement_id:
        raise ApiError(400, "the agreement id is empty")
    timeout_s = query_float(request.query, "timeout", 5.0)
    wait_s = min(max(timeout_s, 10.0), 30.0) if timeout_s else 30.0
    rec = await ctx.call(ctx.market.get_agreement, agreement_id)
    if rec.role != "requestor":
        raise ApiError(404, f"agreement {agreement_id} is not one this node is the requestor of")
    if rec.state != "Approved":
        raise ApiError(409, f"agreement {agreement_id} is {rec.state}; an activity needs an Approved agreement")
    activity_id = await ctx.call(ctx.activity.create_activity, agreement_id)
    view = await _view(ctx, activity_id)
    await ctx.poll(lambda t: view.wait(lambda v: v.state != "New", t), wait_s)
    if view.state in _ENDED:
        raise ApiError(409, f"the provider did not start the activity: {view.error or view.reason or view.state}")
    return json_response(activity_id if bare else {"activityId": activity_id}, 201)


async def exec_batch(ctx: ApiContext, request: web.Request) -> web.Response:
    """POST /activity/{activityId}/exec: run an exe-script batch."""
    activity_id = request.match_info["activityId"]
    commands = exe_script(await body_of(request))
    await _view(ctx, activity_id)
    batch_id = await ctx.call(ctx.activity.exec, activity_id, commands)
    scripts: dict[str, list[dict[str, Any]]] = ctx.extra.setdefault("scripts", {})
    scripts[batch_id] = commands  # for the `started` events of the stream, which name the command
    while len(scripts) > _MAX_SCRIPTS:
        del scripts[next(iter(scripts))]
    return json_response(batch_id)


async def get_exec_batch_results(ctx: ApiContext, request: web.Request) -> web.StreamResponse:
    """GET /activity/{activityId}/exec/{batchId}: a batch's results from index 0 (long poll); with Accept: text/ev…"""
    activity_id, batch_id = request.match_info["activityId"], request.match_info["batchId"]
    view = await _view(ctx, activity_id)
    if batch_id not in view.batches:
        raise ApiError(404, f"batch {batch_id} not found in activity {activity_id}")
    if "text/event-stream" in request.headers.get("Accept", ""):
        return await _stream(ctx, request, view, batch_id)
    timeout_s = min(query_float(request.query, "timeout", 5.0), MAX_POLL_S)
    index = query_int(request.query, "commandIndex", -1, minimum=0, maximum=10_000) if "commandIndex" in request.query else None

    def ready(v: Any) -> bool:
        if v.batch_finished(batch_id):
            return True
        return index is not None and len(v.results(batch_id)) > index

    await ctx.poll(lambda t: view.wait(ready, t), timeout_s)
    script = ctx.extra.get("scripts", {}).get(batch_id, [])
    streamed = {i for i, c in enumerate(script) if _streams(c)}

    def streams_in(v: Any) -> bool:
        # A streamed run's output travels in its events, which may trail its result a little.
        done = {e.index for e in v.events(batch_id, 0) if e.kind == "finished"}
        return all(r.index in done for r in v.results(batch_id) if r.index in streamed and r.result == "Ok")

    if streamed and not streams_in(view):
        await ctx.poll(lambda t: view.wait(streams_in, t), _FINISH_GRACE_S)
    results, events = view.results(batch_id), view.events(batch_id, 0)
    return json_response([models.exe_result_json(_with_streamed(r, script, events)) for r in results])


def _streams(command: dict[str, Any]) -> bool:
    """Whether a command is a run whose stdout or stderr is captured as a stream only."""
    capture = (command.get("run") or {}).get("capture") if "run" in command else None
    if not isinstance(capture, dict):
        return False
    return any(isinstance(m, dict) and "stream" in m and "atEnd" not in m for m in capture.values())


def _with_streamed(result: Any, script: list[dict[str, Any]], events: list[Any]) -> Any:
    """The result with the output of its streamed streams filled in from their events.

    Golem's exe-unit reports streamed output in the polled result too, and clients that poll
    (yapapi's default) read it there.
    """
    import dataclasses

    if not (0 <= result.index < len(script)) or not _streams(script[result.index]):
        return result
    capture = script[result.index]["run"]["capture"]
    changes = {}
    for stream in ("stdout", "stderr"):
        mode = capture.get(stream)
        if getattr(result, stream) is None and isinstance(mode, dict) and "stream" in mode:
            changes[stream] = "".join(e.data for e in events if e.index == result.index and e.kind == stream)
    return dataclasses.replace(result, **changes) if changes else result


async def _stream(ctx: ApiContext, request: web.Request, view: Any, batch_id: str) -> web.StreamResponse:
    """The batch as server-sent events: `event: runtime` per started/stdout/stderr/finished, a ping comment every 15 s.

    Events go out command by command, in index order, so the same batch always makes the
    same numbered sequence and a client reconnecting with Last-Event-Id resumes exactly.
    Commands other than `run` stream nothing from the exe-unit; their started and finished
    events are made from their results, so a client sees every command of the batch end.
    """
    response = web.StreamResponse(status=200, headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
    await response.prepare(request)
    try:
        last_id = int(request.headers.get("Last-Event-Id", "0"))
    except ValueError:
        last_id = 0
    seq = 0  # every event gets the next id; those up to last_id the client has seen
    last_ping = time.monotonic()
    script = ctx.extra.get("scripts", {}).get(batch_id, [])

    def command(index: int) -> dict[str, Any]:
        return script[index] if 0 <= index < len(script) else {"run": {}}

    async def send(index: int, ts_ms: int, kind: dict[str, Any]) -> None:
        nonlocal seq
        seq += 1
        if seq <= last_id:
            return
        data = json.dumps(models.runtime_event_json(batch_id, index, ts_ms, kind), separators=(",", ":"))
        await response.write(f"event: runtime\nid: {seq}\ndata: {data}\n\n".encode())

    current = 0  # the command whose events go out now
    sent = 0  # of its streamed events
    streamed_run = False  # it streamed a started event of its own
    result_seen_at: float | None = None  # when its result came without its finished event
    ended = False
    while not ended:
        results = {r.index: r for r in view.results(batch_id)}
        while True:
            own = [e for e in view.events(batch_id, 0) if e.index == current]
            finished = False
            for event in own[sent:]:
                if event.kind == "started":
                    streamed_run = True
                    kind = {"started": {"command": command(current)}}
                else:
                    kind = models.runtime_kind(event)
                finished = finished or event.kind == "finished"
                await send(current, event.ts_ms, kind)
            sent = len(own)
            result = results.get(current)
            if result is None:
                break
            if not (finished or any(e.kind == "finished" for e in own)):
                if streamed_run:
                    # A streamed run's finished event normally comes before its result; wait a little.
                    result_seen_at = result_seen_at or time.monotonic()
                    if time.monotonic() - result_seen_at < _FINISH_GRACE_S and view.state not in _ENDED:
                        break
                else:
                    await send(current, result.event_ms, {"started": {"command": command(current)}})
                code = 0 if result.result == "Ok" else 1
                await send(current, result.event_ms, {"finished": {"return_code": code, "message": result.message}})
            if result.is_batch_finished:
                ended = True
                break
            current, sent, streamed_run, result_seen_at = current + 1, 0, False, None
        if ended or (view.state in _ENDED and result_seen_at is None):
            break
        now = time.monotonic()
        if now - last_ping >= SSE_PING_S:
            await response.write(b": ping\n\n")
            last_ping = now
        mark = (len(view.events(batch_id, 0)), len(view.results(batch_id)))
        await ctx.poll(
            lambda t: view.wait(
                lambda v: (len(v.events(batch_id, 0)), len(v.results(batch_id))) != mark or v.state in _ENDED, t
            ),
            0.1 if result_seen_at is not None else min(SSE_PING_S, max(0.1, SSE_PING_S - (now - last_ping))),
        )
    await response.write_eof()
    return response


async def get_state(ctx: ApiContext, request: web.Request) -> web.Response:
    """GET /activity/{activityId}/state: an activity's state."""
    view = await _view(ctx, request.match_info["activityId"])
    return json_response(models.activity_state_json(view.state, view.reason, view.error))


async def get_usage(ctx: ApiContext, request: web.Request) -> web.Response:
    """GET /activity/{activityId}/usage: an activity's usage vector."""
    view = await _view(ctx, request.match_info["activityId"])
    stamp = view.usage_ms or view.updated_ms
    return json_response({"currentUsage": list(view.usage), "timestamp": stamp // 1000})


async def get_agreement_id(ctx: ApiContext, request: web.Request) -> web.Response:
    """GET /activity/{activityId}/agreement: the agreement of an activity."""
    view = await _view(ctx, request.match_info["activityId"])
    return json_response(view.agreement_id)


async def get_running_commands(ctx: ApiContext, request: web.Request) -> web.Response:
    """GET /activity/{activityId}/command: batches still running."""
    view = await _view(ctx, request.match_info["activityId"])
    out = []
    if view.state not in _ENDED:
        for batch_id in list(view.batches):
            if not view.batch_finished(batch_id):
                out.append({"batchId": batch_id, "command": "", "progress": f"{len(view.results(batch_id))} done"})
    return json_response(out)


async def destroy_activity(ctx: ApiContext, request: web.Request) -> web.Response:
    """DELETE /activity/{activityId}: end an activity (repeats are no-ops)."""
    activity_id = request.match_info["activityId"]
    timeout_s = query_float(request.query, "timeout", 5.0)
    wait_s = min(timeout_s, 30.0) if timeout_s else 30.0
    view = await _view(ctx, activity_id)
    if view.state != "Terminated":
        await ctx.call(ctx.activity.destroy, activity_id)
        await ctx.poll(lambda t: view.wait(lambda v: v.state == "Terminated", t), wait_s)
    return web.Response(status=200)


async def not_supported(ctx: ApiContext, request: web.Request) -> web.Response:
    """GET /events; PUT /activity/{activityId}/state; POST /activity/{activityId}/encrypted."""
    raise ApiError(501, f"{request.method} {request.path} is not supported by this node: "
                        "its provider side runs activities inside the node, and it has no secure exe-units")


def activity_routes() -> list[Route]:
    """The activity-api operations this node serves."""
    p = PREFIX
    s = {"type": "string"}
    r = Route
    return [
        r("POST", f"{p}/activity", create_activity, "Start an activity under an approved agreement", "createActivity",
          "activity", {"oneOf": [s, {"$ref": "#/components/schemas/CreateActivityRequest"}]},
          (201, {"oneOf": [s, {"$ref": "#/components/schemas/CreateActivityResult"}]}),
          query=(("timeout", {"type": "number", "minimum": 0}),)),
        r("POST", f"{p}/activity/{{activityId}}/exec", exec_batch, "Run an exe-script batch", "exec", "activity",
          {"$ref": "#/components/schemas/ExeScriptRequest"}, (200, s)),
        r("GET", f"{p}/activity/{{activityId}}/exec/{{batchId}}", get_exec_batch_results,
          "A batch's results from index 0 (long poll); with Accept: text/event-stream, its runtime events",
          "getExecBatchResults", "activity",
          ok=(200, {"type": "array", "items": {"$ref": "#/components/schemas/ExeScriptCommandResult"}}),
          query=(("timeout", {"type": "number", "minimum": 0}), ("commandIndex", {"type": "integer", "minimum": 0}))),
        r("GET", f"{p}/activity/{{activityId}}/state", get_state, "An activity's state", "GetActivityState", "activity",
          ok=(200, {"$ref": "#/components/schemas/ActivityState"})),
        r("GET", f"{p}/activity/{{activityId}}/usage", get_usage, "An activity's usage vector", "GetActivityUsage", "activity",
          ok=(200, {"$ref": "#/components/schemas/ActivityUsage"})),
        r("GET", f"{p}/activity/{{activityId}}/agreement", get_agreement_id, "The agreement of an activity",
          "getActivityAgreement", "activity", ok=(200, s)),
        r("GET", f"{p}/activity/{{activityId}}/command", get_running_commands, "Batches still running", "GetRunningCommand",
          "activity", ok=(200, {"type": "array", "items": {"type": "object"}})),
        r("DELETE", f"{p}/activity/{{activityId}}", destroy_activity, "End an activity (repeats are no-ops)",
          "DestroyActivity", "activity", ok=(200, None), query=(("timeout", {"type": "number", "minimum": 0}),)),
        r("GET", f"{p}/events", not_supported, "Provider activity events (501: not supported)", "CollectActivityEvents",
          "activity", ok=(200, None)),
        r("PUT", f"{p}/activity/{{activityId}}/state", not_supported, "Set an activity's state (501: not supported)",
          "SetActivityState", "activity", {"$ref": "#/components/schemas/ActivityState"}, (200, None)),
        r("POST", f"{p}/activity/{{activityId}}/encrypted", not_supported, "Secure exe-unit calls (501: not supported)",
          "callEncrypted", "activity", ok=(200, None)),
    ]
