"""Length-prefixed codec frames over a byte stream (the pipes between a node and its exe-unit children)."""

from __future__ import annotations

import struct
import threading
from typing import BinaryIO

from protocol.codec import Message, decode, encode
from protocol.errors import DecodeError

__all__ = ["FrameWriter", "read_frame", "MAX_FRAME_BYTES"]

MAX_FRAME_BYTES = 16 * 1024 * 1024
_HEADER = struct.Struct(">I")


class FrameWriter:
    """Writes messages to a stream; safe to call from several threads."""

    def __init__(self, stream: BinaryIO) -> None:
        self._stream = stream
        self._lock = threading.Lock()

    def write(self, msg: Message) -> None:
        """Write one message and flush.

        Raises:
            OSError: the other end is gone.
        """
        data = encode(msg)
        with self._lock:
            self._stream.write(_HEADER.pack(len(data)) + data)
            self._stream.flush()


def read_frame(stream: BinaryIO) -> Message | None:
    """The next message, or None at end of stream.

    Raises:
        DecodeError: a frame that is too large or not a message.
    """
    header = stream.read(_HEADER.size)
    if len(header) < _HEADER.size:
        return None
    (size,) = _HEADER.unpack(header)
    if size > MAX_FRAME_BYTES:
        raise DecodeError(f"frame of {size} bytes from an exe-unit is over the cap of {MAX_FRAME_BYTES}")
    data = stream.read(size)
    if len(data) < size:
        return None
    return decode(data)
