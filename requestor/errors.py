"""The requestor library's errors, under Loam's one base class.

    NodeError (protocol.errors)
    └── RequestorError             anything the requestor library raises on purpose
        ├── ConfigurationError     bad arguments or environment (no app-key, a malformed package, a budget of 0) (also a ValueError)
        ├── ApiError               the node answered a REST call with an error status (or could not be reached)
        ├── CommandError           a command of an exe-script failed on the provider
        ├── ActivityError          an activity ended, stopped answering or did not finish a batch in time
        ├── NoProviderError        no provider could be agreed with in time
        ├── TaskFailedError        a task failed on every provider it was tried on
        └── NoMajorityError        redundant runs of a task did not agree
"""

from __future__ import annotations

from typing import Any

from protocol.errors import NodeError

__all__ = [
    "RequestorError",
    "ConfigurationError",
    "ApiError",
    "CommandError",
    "ActivityError",
    "NoProviderError",
    "TaskFailedError",
    "NoMajorityError",
]


class RequestorError(NodeError):
    """Base of the requestor library's errors."""


class ConfigurationError(RequestorError, ValueError):
    """A bad argument or environment variable given to the library."""


class ApiError(RequestorError):
    """A REST call answered with an error status (status 0: the node could not be reached)."""

    def __init__(self, method: str, path: str, status: int, message: str) -> None:
        where = f"{method} {path}"
        text = f"{where} failed: {message}" if status == 0 else f"{where} answered {status}: {message}"
        super().__init__(text)
        self.method = method
        self.path = path
        self.status = status
        self.message = message


class CommandError(RequestorError):
    """A command of a batch ended with an error on the provider."""

    def __init__(self, activity_id: str, index: int, command: dict[str, Any] | None, message: str, stderr: str = "") -> None:
        name = next(iter(command)) if command else "command"
        text = f"activity {activity_id}: command {index} ({name}) failed: {message or 'no message'}"
        if stderr:
            text += f"; stderr: {stderr.strip()[-500:]}"
        super().__init__(text)
        self.activity_id = activity_id
        self.index = index
        self.command = command
        self.message = message
        self.stderr = stderr


class ActivityError(RequestorError):
    """An activity is gone, stopped answering, or a batch did not finish in time."""


class NoProviderError(RequestorError):
    """No provider could be agreed with in time."""


class TaskFailedError(RequestorError):
    """A task failed on every provider it was tried on."""


class NoMajorityError(TaskFailedError):
    """The redundant runs of a task gave results no majority agrees on."""
