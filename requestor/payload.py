"""What a requestor asks for: a payload (a WASI package or a container image) and resources, as a demand.

    payload = WasmPackage("hash:sha3:<sha3-224>:http://host/prog.zip")
    props, constraints = build_demand(payload, Resources(cores=2, memory_gib=1.0), subnet="public", now_ms=now)
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from requestor.errors import ConfigurationError

__all__ = [
    "Payload",
    "WasmPackage",
    "VmImage",
    "Resources",
    "build_demand",
    "parse_task_package",
    "task_package_for",
    "resolve_image",
]

_TASK_PACKAGE = re.compile(r"^hash:sha3:([0-9a-fA-F]{56}):(.+)$")


def parse_task_package(text: str) -> tuple[str, str]:
    """(sha3-224 hex, url) of a task package string.

    Raises:
        ConfigurationError: not `hash:sha3:<56 hex digits>:<http(s) url>`.

    >>> parse_task_package("hash:sha3:" + "ab" * 28 + ":http://h/p.zip")[1]
    'http://h/p.zip'
    """
    if not isinstance(text, str):
        raise ConfigurationError(f"a task package is a string, not {type(text).__name__}")
    match = _TASK_PACKAGE.match(text.strip())
    if match is None:
        raise ConfigurationError(
            f"task package {text!r} is not hash:sha3:<sha3-224, 56 hex digits>:<url> (`loam package` prints one)"
        )
    digest, url = match.group(1).lower(), match.group(2)
    parsed = urlparse(url)
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise ConfigurationError(f"task package {text!r}: its URL {url!r} must be http(s)://host/…")
    return digest, url


def task_package_for(path: Path | str, url: str) -> str:
    """The task package string of a local file served at url (hashes the file)."""
    data = Path(path).read_bytes()
    text = f"hash:sha3:{hashlib.sha3_224(data).hexdigest()}:{url}"
    parse_task_package(text)
    return text


@dataclass(frozen=True, slots=True)
class Resources:
    """At least this much of a provider: cpu threads, memory and storage (GiB)."""

    cores: int = 1
    memory_gib: float = 0.0
    storage_gib: float = 0.0

    def __post_init__(self) -> None:
        if isinstance(self.cores, bool) or not isinstance(self.cores, int) or self.cores < 1:
            raise ConfigurationError(f"cores must be a whole number of at least 1, not {self.cores!r}")
        for name in ("memory_gib", "storage_gib"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1e6:
                raise ConfigurationError(f"{name} must be a number of GiB from 0, not {value!r}")

    def constraints(self) -> list[str]:
        """Demand constraints on the offer's golem.inf properties."""
        out = [f"(golem.inf.cpu.threads>={self.cores})"]
        if self.memory_gib:
            out.append(f"(golem.inf.mem.gib>={_num(self.memory_gib)})")
        if self.storage_gib:
            out.append(f"(golem.inf.storage.gib>={_num(self.storage_gib)})")
        return out


@dataclass(frozen=True, slots=True)
class Payload:
    """What runs: the runtime's name and the demand properties that describe the work."""

    runtime: str
    task_package: str
    properties: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        parse_task_package(self.task_package)
        if not isinstance(self.runtime, str) or not re.fullmatch(r"[A-Za-z0-9_.\-]+", self.runtime):
            raise ConfigurationError(f"runtime {self.runtime!r} is not a runtime name")

    def demand_properties(self) -> dict[str, Any]:
        return {"golem.srv.comp.task_package": self.task_package.strip(), **self.properties}


def WasmPackage(task_package: str) -> Payload:  # noqa: N802 - reads as a type at the call site
    """A WASI package (zip with manifest.json) run on wasmtime.

    Raises:
        ConfigurationError: a malformed task package string.
    """
    return Payload("wasmtime", task_package)


def VmImage(task_package: str) -> Payload:  # noqa: N802
    """A container image (GVMI) run on the vm runtime (Docker on the provider).

    Raises:
        ConfigurationError: a malformed task package string.
    """
    return Payload("vm", task_package, {"golem.srv.comp.vm.package_format": "gvmkit-squash"})


async def resolve_image(repo_url: str, *, image_hash: str | None = None, tag: str | None = None) -> Payload:
    """A VmImage from an image repository (`GET /v1/image/info?hash=…|tag=…&count=true`, as Golem's).

    Raises:
        ConfigurationError: neither or both of image_hash and tag, a bad URL, or the repository
            does not know the image (its answer is quoted).
    """
    import aiohttp

    if (image_hash is None) == (tag is None):
        raise ConfigurationError("resolve_image needs exactly one of image_hash (sha3-224 hex) and tag (name:version)")
    if not isinstance(repo_url, str) or not repo_url.startswith(("http://", "https://")):
        raise ConfigurationError(f"the image repository URL {repo_url!r} must start with http:// or https://")
    query = {"hash": image_hash} if image_hash is not None else {"tag": str(tag)}
    query["count"] = "true"
    url = repo_url.rstrip("/") + "/v1/image/info"
    try:
        async with aiohttp.ClientSession() as session, session.get(url, params=query, timeout=aiohttp.ClientTimeout(total=30)) as r:
            body = await r.text()
            if r.status != 200:
                raise ConfigurationError(f"image {image_hash or tag} not found at {repo_url}: {r.status} {body[:200]}")
            info = json.loads(body)
    except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
        raise ConfigurationError(f"cannot ask the image repository at {repo_url}: {exc}") from exc
    sha3, link = info.get("sha3"), info.get("https") or info.get("http")
    if not isinstance(sha3, str) or not isinstance(link, str):
        raise ConfigurationError(f"the image repository at {repo_url} answered without sha3 and http: {body[:200]}")
    return VmImage(f"hash:sha3:{sha3}:{link}")


def build_demand(
    payload: Payload, resources: Resources, *, subnet: str, expiration_ms: int,
    decorations: dict[str, Any] | None = None, extra_properties: dict[str, Any] | None = None,
    extra_constraints: list[str] | None = None,
) -> tuple[dict[str, Any], str]:  # fmt: skip
    """The demand's flat properties and its constraint filter.

    decorations: what `GET /payment-api/v1/demandDecorations` answered (properties as key/value
    pairs, constraints as strings).
    """
    if not isinstance(subnet, str) or not subnet:
        raise ConfigurationError("subnet must be a non-empty string")
    props: dict[str, Any] = {
        "golem.node.debug.subnet": subnet,
        "golem.srv.comp.expiration": int(expiration_ms),
        **payload.demand_properties(),
    }
    constraints = [f"(golem.runtime.name={payload.runtime})", f"(golem.node.debug.subnet={subnet})", *resources.constraints()]
    if decorations:
        for item in decorations.get("properties", []):
            props[item["key"]] = _decoded(item["value"])
        constraints += [c for c in decorations.get("constraints", []) if c]
    props.update(extra_properties or {})
    constraints += extra_constraints or []
    return props, "(&" + "".join(constraints) + ")"


def _decoded(value: Any) -> Any:
    # Decorations come as strings; numbers were written as their text.
    if isinstance(value, str):
        try:
            return int(value)
        except ValueError:
            return value
    return value


def _num(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))
