"""Checks of REST request bodies and query parameters against the OpenAPI schemas; failures are 400s."""

from __future__ import annotations

import json
import math
import re
from datetime import datetime, timezone
from typing import Any, Mapping

from node.api.errors import ApiError
from protocol.jsontypes import json_type

__all__ = [
    "parse_json",
    "demand_offer_base",
    "reason",
    "agreement_proposal",
    "query_float",
    "query_int",
    "query_time_ms",
    "parse_time_ms",
    "exe_script",
    "require_object",
    "optional_str",
    "MAX_POLL_S",
    "MAX_JSON_DEPTH",
]

# A long poll holds a worker thread; the spec leaves the maximum to the server.
MAX_POLL_S = 60.0
# Deep enough for any Golem body (an exe-script's capture spec is 5 levels); deeper is an attack.
MAX_JSON_DEPTH = 32
_CAPTURE_FORMATS = ("string", "binary", "str", "bin")


def parse_json(raw: bytes, *, required: bool = True) -> Any:
    """The JSON of a request body; None for an empty optional body.

    Raises:
        ApiError: 400 for an empty required body or text that is not JSON.
    """
    if not raw.strip():
        if required:
            raise ApiError(400, "the request needs a JSON body")
        return None
    # Checked before parsing: the node runs with a recursion limit of 100 000 (py_ecc raises
    # it on import), so the C parser would recurse on a deep body until the thread's stack
    # overflows and the process dies.
    _check_nesting(raw)
    try:
        return json.loads(raw, parse_constant=_no_constant)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ApiError(400, f"the request body is not JSON: {exc}") from None
    except RecursionError:
        raise ApiError(400, f"the request body nests deeper than {MAX_JSON_DEPTH} levels") from None


_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)
_BRACKET = re.compile(rb"[\[\]{}]")
_MAX_CONTAINERS = 10_000


def _check_nesting(raw: bytes) -> None:
    """400 when arrays and objects (outside strings) nest deeper than MAX_JSON_DEPTH or number too many."""
    structure = _STRING.sub(b'""', raw)
    if structure.count(b"[") + structure.count(b"{") > _MAX_CONTAINERS:
        raise ApiError(400, f"the request body holds more than {_MAX_CONTAINERS} arrays and objects")
    depth = 0
    for m in _BRACKET.finditer(structure):
        depth += 1 if m.group() in (b"[", b"{") else -1
        if depth > MAX_JSON_DEPTH:
            raise ApiError(400, f"the request body nests deeper than {MAX_JSON_DEPTH} levels")


def _no_constant(name: str) -> Any:
    # NaN and Infinity are not JSON, though Python's parser takes them.
    raise ValueError(f"{name} is not a JSON value")


def require_object(value: Any, what: str) -> dict[str, Any]:
    """value if it is a JSON object, else a 400."""
    if not isinstance(value, dict):
        raise ApiError(400, f"{what} must be a JSON object, not {json_type(value)}")
    return value


def optional_str(obj: Mapping[str, Any], key: str, what: str) -> str | None:
    """obj[key] when it is a string, None when absent or null, else a 400."""
    value = obj.get(key)
    if value is not None and not isinstance(value, str):
        raise ApiError(400, f"{what}.{key} must be a string, not {json_type(value)}")
    return value


def demand_offer_base(body: Any, what: str = "the demand") -> tuple[dict[str, Any], str]:
    """(properties, constraints) of a DemandOfferBase body.

    Raises:
        ApiError: 400 unless properties is an object and constraints a string.
    """
    obj = require_object(body, what)
    props = obj.get("properties")
    cons = obj.get("constraints")
    if "properties" not in obj or not isinstance(props, dict):
        raise ApiError(400, f"{what} needs properties, a JSON object (got {json_type(props)})")
    if "constraints" not in obj or not isinstance(cons, str):
        raise ApiError(400, f"{what} needs constraints, a string (got {json_type(cons)})")
    return props, cons


def reason(body: Any) -> dict[str, Any] | None:
    """An optional Reason body: an object with a string message, other keys kept.

    Raises:
        ApiError: 400 for anything else.
    """
    if body is None:
        return None
    obj = require_object(body, "the reason")
    if not isinstance(obj.get("message"), str):
        raise ApiError(400, "a reason needs message, a string")
    return dict(obj)


def agreement_proposal(body: Any) -> tuple[str, int]:
    """(proposalId, validTo in ms) of an AgreementProposal body.

    Raises:
        ApiError: 400 for a missing id or a validTo that is not an RFC 3339 date-time.
    """
    obj = require_object(body, "the agreement proposal")
    proposal_id = obj.get("proposalId")
    if not isinstance(proposal_id, str) or not proposal_id:
        raise ApiError(400, "the agreement proposal needs proposalId, a non-empty string")
    valid_to = obj.get("validTo")
    if not isinstance(valid_to, str):
        raise ApiError(400, "the agreement proposal needs validTo, an RFC 3339 date-time string")
    return proposal_id, parse_time_ms(valid_to, "validTo")


def parse_time_ms(text: str, what: str) -> int:
    """An RFC 3339 date-time as ms since the epoch (floored; no offset = UTC).

    Raises:
        ApiError: 400 when it does not parse.
    """
    try:
        value = datetime.fromisoformat(text.strip().replace("z", "Z"))
    except ValueError:
        raise ApiError(400, f"{what} is not an RFC 3339 date-time: {text!r}") from None
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    # Exact integer arithmetic: floating point would round 12.0005 s either way.
    delta = value - datetime(1970, 1, 1, tzinfo=timezone.utc)
    return (delta.days * 86_400_000_000 + delta.seconds * 1_000_000 + delta.microseconds) // 1000


def query_float(
    query: Mapping[str, str], name: str, default: float, *, minimum: float = 0.0, maximum: float | None = None
) -> float:
    """A float query parameter within [minimum, maximum].

    Raises:
        ApiError: 400 when it is not a finite number or out of range.
    """
    text = query.get(name)
    if text is None or text == "":
        return default
    try:
        value = float(text)
    except ValueError:
        raise ApiError(400, f"query parameter {name} must be a number, got {text!r}") from None
    if not math.isfinite(value) or value < minimum or (maximum is not None and value > maximum):
        bound = f"{minimum} to {maximum}" if maximum is not None else f"at least {minimum}"
        raise ApiError(400, f"query parameter {name} must be {bound}, got {text!r}")
    return value


def query_int(query: Mapping[str, str], name: str, default: int, *, minimum: int, maximum: int) -> int:
    """An integer query parameter within [minimum, maximum].

    Raises:
        ApiError: 400 when it is not an integer or out of range.
    """
    text = query.get(name)
    if text is None or text == "":
        return default
    try:
        value = int(text)
    except ValueError:
        raise ApiError(400, f"query parameter {name} must be an integer, got {text!r}") from None
    if not minimum <= value <= maximum:
        raise ApiError(400, f"query parameter {name} must be {minimum} to {maximum}, got {value}")
    return value


def query_time_ms(query: Mapping[str, str], name: str) -> int | None:
    """A date-time query parameter as ms (None when absent)."""
    text = query.get(name)
    if text is None or text == "":
        return None
    return parse_time_ms(text, f"query parameter {name}")


def exe_script(body: Any) -> list[dict[str, Any]]:
    """The commands of an ExeScriptRequest body ``{"text": "<ExeScript JSON>"}``, checked per command.

    Raises:
        ApiError: 400 naming the command and what is wrong with it.
    """
    obj = require_object(body, "the exe-script request")
    text = obj.get("text")
    if not isinstance(text, str):
        raise ApiError(400, f"the exe-script request needs text, a string holding the ExeScript JSON (got {json_type(text)})")
    try:
        commands = parse_json(text.encode("utf-8", "surrogatepass"))
    except ApiError as exc:
        raise ApiError(400, f"the exe-script text: {exc.message}") from None
    if not isinstance(commands, list) or not commands:
        raise ApiError(400, "an exe-script is a non-empty JSON array of commands")
    if len(commands) > 1000:
        raise ApiError(400, "an exe-script may hold at most 1000 commands")
    out = []
    for index, command in enumerate(commands):
        if not isinstance(command, dict) or len(command) != 1:
            raise ApiError(400, f"command {index} must be an object with exactly one key, the command's name")
        name, params = next(iter(command.items()))
        check = _COMMAND_CHECKS.get(name)
        if check is None:
            raise ApiError(400, f"command {index}: unknown command {name!r} (known: {', '.join(_COMMAND_CHECKS)})")
        if params is None:
            params = {}
        if not isinstance(params, dict):
            raise ApiError(400, f"command {index} ({name}): its body must be an object, not {json_type(params)}")
        problem = check(params)
        if problem:
            raise ApiError(400, f"command {index} ({name}): {problem}")
        out.append({name: params})
    return out


def _str_list(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(v, str) for v in value)


def _check_progress(params: dict[str, Any]) -> str | None:
    progress = params.get("progress")
    if progress is not None and not isinstance(progress, dict):
        return "progress must be an object"
    return None


def _check_deploy(params: dict[str, Any]) -> str | None:
    net = params.get("net")
    if net is not None:
        if not isinstance(net, list):
            return "net must be an array"
        for n in net:
            if not isinstance(n, dict) or not all(isinstance(n.get(k), str) for k in ("id", "ip", "mask")):
                return "each net entry needs id, ip and mask, strings"
    for key in ("hosts", "nodes"):
        value = params.get(key)
        if value is not None and not (isinstance(value, dict) and all(isinstance(v, str) for v in value.values())):
            return f"{key} must be an object of strings"
    for key in ("volumes", "env"):
        value = params.get(key)
        if value is not None and not isinstance(value, dict):
            return f"{key} must be an object"
    return _check_progress(params)


def _check_start(params: dict[str, Any]) -> str | None:
    args = params.get("args")
    if args is not None and not _str_list(args):
        return "args must be an array of strings"
    return None


def _check_run(params: dict[str, Any]) -> str | None:
    if not isinstance(params.get("entry_point"), str) or not params["entry_point"]:
        return "entry_point, a non-empty string, is required"
    args = params.get("args")
    if args is not None and not _str_list(args):
        return "args must be an array of strings"
    capture = params.get("capture")
    if capture is None:
        return None
    if not isinstance(capture, dict):
        return "capture must be an object"
    for stream, mode in capture.items():
        if stream not in ("stdout", "stderr"):
            return f"capture has stdout and stderr, not {stream!r}"
        if mode is None:
            continue
        if not isinstance(mode, dict):
            return f"capture.{stream} must be an object"
        for how, spec in mode.items():
            if how not in ("atEnd", "stream"):
                return f"capture.{stream} is atEnd or stream, not {how!r}"
            if spec is None:
                continue
            if not isinstance(spec, dict):
                return f"capture.{stream}.{how} must be an object"
            fmt = spec.get("format")
            if fmt is not None and fmt not in _CAPTURE_FORMATS:
                return f"capture.{stream}.{how}.format must be one of {', '.join(_CAPTURE_FORMATS)}"
            part = spec.get("part")
            if part is not None:
                if not isinstance(part, dict) or not all(
                    k in ("head", "tail", "headTail") and isinstance(v, (int, float)) and not isinstance(v, bool) and v >= 0
                    for k, v in part.items()
                ):
                    return f"capture.{stream}.{how}.part is head, tail or headTail with a non-negative number"
            limit = spec.get("limit")
            if limit is not None and (isinstance(limit, bool) or not isinstance(limit, (int, float)) or limit < 0):
                return f"capture.{stream}.{how}.limit must be a non-negative number"
    return None


def _check_transfer(params: dict[str, Any]) -> str | None:
    for key in ("from", "to"):
        if not isinstance(params.get(key), str) or not params[key]:
            return f"{key}, a non-empty string, is required"
    if params.get("format") is not None and not isinstance(params["format"], str):
        return "format must be a string"
    depth = params.get("depth")
    if depth is not None and (isinstance(depth, bool) or not isinstance(depth, (int, float))):
        return "depth must be a number"
    fileset = params.get("fileset")
    if fileset is not None and not isinstance(fileset, list):
        return "fileset must be an array"
    return _check_progress(params)


def _check_empty(params: dict[str, Any]) -> str | None:
    return None


_COMMAND_CHECKS = {
    "deploy": _check_deploy,
    "start": _check_start,
    "run": _check_run,
    "transfer": _check_transfer,
    "sign": _check_empty,
    "terminate": _check_empty,
}
