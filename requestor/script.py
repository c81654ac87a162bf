"""Exe-scripts built in Python: commands (deploy, start, run, transfers) and handles to their results.

    script = Script()
    script.send_url("http://host/data.txt", "/input/data.txt")
    words = script.run("wc", "/input/data.txt")
    script.download_file("/output/out.txt", Path("out.txt"))    # through the gftp command
    await ctx.run(script)
    print(words.stdout)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from requestor.errors import ConfigurationError

__all__ = ["Script", "Command", "CommandResult", "FileSend", "FileReceive"]


@dataclass(slots=True)
class CommandResult:
    """One command's result, as the node reported it."""

    index: int
    ok: bool
    stdout: str = ""
    stderr: str = ""
    message: str = ""

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> CommandResult:
        return cls(
            int(raw.get("index", -1)), raw.get("result") == "Ok", _text(raw.get("stdout")), _text(raw.get("stderr")),
            _text(raw.get("message")),
        )  # fmt: skip


@dataclass(slots=True)
class Command:
    """A command of a script and, once it ran, its result."""

    index: int
    body: dict[str, Any]
    result: CommandResult | None = None
    streamed_stdout: list[str] = field(default_factory=list)
    streamed_stderr: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        return next(iter(self.body))

    @property
    def stdout(self) -> str:
        """The command's standard output: as captured at the end, else as streamed."""
        if self.result is not None and self.result.stdout:
            return self.result.stdout
        return "".join(self.streamed_stdout)

    @property
    def stderr(self) -> str:
        if self.result is not None and self.result.stderr:
            return self.result.stderr
        return "".join(self.streamed_stderr)

    @property
    def ok(self) -> bool:
        return self.result is not None and self.result.ok


@dataclass(frozen=True, slots=True)
class FileSend:
    """A local file to publish with gftp before the batch, then fetched into the activity."""

    local: Path
    index: int


@dataclass(frozen=True, slots=True)
class FileReceive:
    """A file the activity uploads to a gftp slot that writes local."""

    local: Path
    index: int


class Script:
    """A batch of commands for one activity."""

    def __init__(self) -> None:
        self.commands: list[Command] = []
        self.sends: list[FileSend] = []
        self.receives: list[FileReceive] = []
        self.streaming = False

    def __len__(self) -> int:
        return len(self.commands)

    def _add(self, body: dict[str, Any]) -> Command:
        command = Command(len(self.commands), body)
        self.commands.append(command)
        return command

    def deploy(self, **params: Any) -> Command:
        """Download and prepare the payload (done for you when an activity starts)."""
        return self._add({"deploy": dict(params)})

    def start(self, *args: str) -> Command:
        """Start the runtime (done for you when an activity starts)."""
        _strings(args, "start")
        return self._add({"start": {"args": list(args)}})

    def run(self, entry_point: str, *args: str, stream: bool = False) -> Command:
        """Run an entry point (wasmtime) or a program path (vm) with arguments.

        stream=True streams stdout and stderr as they are written (see WorkContext.run's on_event).
        """
        if not isinstance(entry_point, str) or not entry_point:
            raise ConfigurationError(f"run needs an entry point, a non-empty string, not {entry_point!r}")
        _strings(args, f"run {entry_point}")
        how = {"stream": {}} if stream else {"atEnd": {"format": "str"}}
        self.streaming = self.streaming or stream
        return self._add({"run": {"entry_point": entry_point, "args": list(args), "capture": {"stdout": how, "stderr": how}}})

    def send_url(self, url: str, dest: str) -> Command:
        """Fetch an http(s) or gftp URL into the activity at dest (an absolute path, e.g. /input/x)."""
        if not isinstance(url, str) or not url.startswith(("http://", "https://", "gftp://")):
            raise ConfigurationError(f"send_url needs an http(s):// or gftp:// URL, not {url!r}")
        return self._add({"transfer": {"from": url, "to": _container(dest)}})

    def upload_url(self, src: str, url: str) -> Command:
        """Send a file of the activity (an absolute path) to an http(s) or gftp URL."""
        if not isinstance(url, str) or not url.startswith(("http://", "https://", "gftp://")):
            raise ConfigurationError(f"upload_url needs an http(s):// or gftp:// URL, not {url!r}")
        return self._add({"transfer": {"from": _container(src), "to": url}})

    def send_file(self, local: str | Path, dest: str) -> Command:
        """Send a local file into the activity at dest, published through `gftp` for the batch."""
        path = Path(local)
        if not path.is_file():
            raise ConfigurationError(f"send_file: {path} is not a file")
        command = self._add({"transfer": {"from": "", "to": _container(dest)}})
        self.sends.append(FileSend(path.absolute(), command.index))
        return command

    def download_file(self, src: str, local: str | Path) -> Command:
        """Bring a file of the activity back to local, through a `gftp` upload slot."""
        path = Path(local).absolute()
        if not path.parent.is_dir():
            raise ConfigurationError(f"download_file: the folder of {path} does not exist")
        command = self._add({"transfer": {"from": _container(src), "to": ""}})
        self.receives.append(FileReceive(path, command.index))
        return command

    def to_json(self) -> list[dict[str, Any]]:
        """The commands as the API takes them."""
        for s in self.sends:
            if not self.commands[s.index].body["transfer"]["from"]:
                raise ConfigurationError(f"command {s.index}: {s.local} is not published yet")
        for r in self.receives:
            if not self.commands[r.index].body["transfer"]["to"]:
                raise ConfigurationError(f"command {r.index}: no upload slot for {r.local} yet")
        return [c.body for c in self.commands]


def _container(path: str) -> str:
    if not isinstance(path, str) or not path.startswith("/"):
        raise ConfigurationError(f"a path in the activity must be absolute (e.g. /input/data.txt), not {path!r}")
    return f"container:{path}"


def _strings(args: tuple[Any, ...], what: str) -> None:
    for a in args:
        if not isinstance(a, str):
            raise ConfigurationError(f"{what}: arguments must be strings, not {type(a).__name__} ({a!r})")


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ("" if value is None else str(value))
