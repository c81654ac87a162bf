"""The base every Loam actor derives from: bound logging, supervision hooks, a post-message hook."""

from __future__ import annotations

from types import TracebackType
from typing import Any, Callable

import threading

import pykka
import structlog

__all__ = ["LoamActor", "FailureHandler", "Ticker"]

# Called with (actor name, exception) when an actor dies of an unexpected error.
FailureHandler = Callable[[str, BaseException], None]


class Ticker:
    """Tells an actor a message every interval, from a daemon thread, until stopped."""

    def __init__(self, ref: pykka.ActorRef, message: Any, interval_s: float) -> None:
        self._ref = ref
        self._message = message
        self._interval_s = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="loam-ticker", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self._interval_s):
            try:
                self._ref.tell(self._message)
            except pykka.ActorDeadError:
                return

    def stop(self) -> None:
        """Stop telling."""
        self._stop.set()


class LoamActor(pykka.ThreadingActor):
    """A pykka thread actor that logs with its node id and reports its own death.

    Unexpected exceptions (bugs) in a told message stop the actor; `on_failure` then
    hands the error to the node's supervisor, which brings the node down loudly rather
    than leaving a silent hole. Expected bad input is validated at the boundary and
    answered or logged, never raised.
    """

    name: str = "actor"

    def __init__(self, node_id: str, on_actor_failure: FailureHandler | None = None) -> None:
        super().__init__()
        self.node_id = node_id
        self._on_actor_failure = on_actor_failure
        self._log = structlog.get_logger().bind(node_id=node_id, actor=self.name)

    def start_up(self) -> None:
        """Set the actor up in its own thread (subclasses override this, not on_start)."""

    def on_start(self) -> None:
        # pykka logs an exception from on_start and stops the actor without calling
        # on_failure; report it here so the node can say why it cannot start.
        try:
            self.start_up()
        except Exception as exc:
            self._log.error("actor_start_failed", error=str(exc))
            if self._on_actor_failure is not None:
                self._on_actor_failure(self.name, exc)
            raise

    def ping(self) -> bool:
        """Answer a health check: the actor's mailbox is being served."""
        return True

    def after_message(self) -> None:
        """Hook run after every handled message (tells, asks and proxy calls alike)."""

    # pykka routes tells, asks and proxy calls through _handle_receive; wrapping it is the
    # one place to run work after each message, whatever kind it was.
    def _handle_receive(self, message: Any) -> Any:
        try:
            return super()._handle_receive(message)
        finally:
            self.after_message()

    def on_failure(
        self,
        exception_type: type[BaseException] | None,
        exception_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._log.error("actor_failed", error=repr(exception_value), exc_info=(exception_type, exception_value, traceback))
        if self._on_actor_failure is not None and exception_value is not None:
            self._on_actor_failure(self.name, exception_value)
