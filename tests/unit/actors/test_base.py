"""LoamActor: a bug in a told message is reported to the supervisor, not swallowed."""

from __future__ import annotations

import threading

import pykka

from actors.base import LoamActor


class _Fragile(LoamActor):
    name = "fragile"

    def __init__(self, on_failure) -> None:
        super().__init__("0x" + "0" * 40, on_failure)
        self.handled = 0

    def on_receive(self, message: object) -> None:
        if message == "boom":
            raise RuntimeError("a bug")
        self.handled += 1

    def after_message(self) -> None:
        self.handled += 0  # runs after every message; must not break anything


def test_failure_in_a_told_message_reaches_the_supervisor_and_stops_the_actor() -> None:
    seen: list[tuple[str, BaseException]] = []
    done = threading.Event()

    def on_failure(name: str, error: BaseException) -> None:
        seen.append((name, error))
        done.set()

    ref = _Fragile.start(on_failure)
    assert ref.proxy().ping().get(timeout=5) is True
    ref.tell("boom")
    assert done.wait(5)
    assert seen[0][0] == "fragile" and isinstance(seen[0][1], RuntimeError)
    ref.actor_stopped.wait(5)
    assert not ref.is_alive()


def test_an_error_in_an_ask_goes_back_to_the_caller_and_the_actor_lives() -> None:
    ref = _Fragile.start(None)
    try:
        future = ref.ask("boom", block=False)
        try:
            future.get(timeout=5)
        except RuntimeError as exc:
            assert "a bug" in str(exc)
        else:
            raise AssertionError("the error should reach the caller")
        assert ref.is_alive()
        assert ref.proxy().ping().get(timeout=5)
    finally:
        ref.stop()
    assert not pykka.ActorRegistry.get_by_class(_Fragile)
