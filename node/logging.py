"""Structured logging setup: structlog key-value events, readable on a console or as JSON lines."""

from __future__ import annotations

import logging
import sys
from typing import Any, TextIO

import structlog

from protocol.errors import SettingsError

__all__ = ["configure_logging", "get_logger"]

_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever sys.stderr is at the time of each record.

    Test runners and click's CliRunner swap sys.stderr; a handler that kept the stream it
    was made with would write to a closed file after the swap.
    """

    _loam_handler = True

    def __init__(self) -> None:
        super().__init__(None)

    @property  # type: ignore[override]
    def stream(self) -> TextIO:
        return sys.stderr

    @stream.setter
    def stream(self, _value: TextIO) -> None:
        pass


def configure_logging(level: str, json: bool) -> None:
    """Route structlog and stdlib logging (pykka's too) to stderr at level, as console text or JSON lines.

    Safe to call more than once; the last call wins.

    >>> configure_logging("info", json=False)

    Raises:
        SettingsError: level is not debug, info, warning or error.
    """
    try:
        numeric_level = _LEVELS[level.lower()]
    except KeyError:
        raise SettingsError(f"log level {level!r} must be one of {', '.join(_LEVELS)}") from None

    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.StackInfoRenderer(),
    ]
    if json:
        final: list[Any] = [
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(),
        ]
    else:
        final = [structlog.dev.ConsoleRenderer(colors=_is_tty(sys.stderr))]

    structlog.configure(
        processors=[structlog.stdlib.filter_by_level, *shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        context_class=dict,
        # Not cached, so that loggers fetched before a reconfiguration follow it.
        cache_logger_on_first_use=False,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *final],
    )
    handler = _StderrHandler()
    handler.setFormatter(formatter)

    root = logging.getLogger()
    for old in list(root.handlers):
        if getattr(old, "_loam_handler", False):
            root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(numeric_level)


def get_logger(**bind: Any) -> Any:
    """A structlog logger with bind as its initial context.

    >>> log = get_logger(actor="net")
    >>> log.info("link_opened", peer="0xAb...")  # doctest: +SKIP
    """
    return structlog.stdlib.get_logger(**bind)


def _is_tty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False
