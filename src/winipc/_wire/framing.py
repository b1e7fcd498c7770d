"""Message-mode pipe framing, version 1 (specified in docs/wire/pipe-messages.md).

Each message is a 4-byte little-endian header followed by its payload. Bit 31 of the
header marks a control frame (the next byte is its kind); bits 0..30 are the length, so a
message holds at most 2**31 - 1 bytes. Byte-mode pipes carry raw bytes with no framing.

:class:`FrameDecoder` is the sans-I/O decoder: feed it bytes, take events out. It caps
every length against ``max_message_size`` before buffering, and raises
:class:`winipc.errors.InvalidData` on malformed input, and nothing else.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from winipc.errors import InvalidData

HEADER = struct.Struct("<I")
HEADER_SIZE = HEADER.size
CONTROL_BIT = 0x8000_0000
LENGTH_MASK = 0x7FFF_FFFF
MAX_MESSAGE = LENGTH_MASK

#: control kinds
CONTROL_HANDLE = 1  # payload: msgpack handle description; descriptors ride as SCM_RIGHTS


def message_header(length: int) -> bytes:
    if not 0 <= length <= MAX_MESSAGE:
        raise InvalidData(f"message length {length} outside 0..{MAX_MESSAGE}")
    return HEADER.pack(length)


def control_frame(kind: int, payload: bytes) -> bytes:
    if not 0 <= kind <= 255:
        raise InvalidData(f"control kind {kind} outside 0..255")
    body = bytes([kind]) + payload
    if len(body) > MAX_MESSAGE:
        raise InvalidData("control frame too long")
    return HEADER.pack(CONTROL_BIT | len(body)) + body


def parse_header(raw: bytes | bytearray | memoryview, max_message_size: int) -> tuple[bool, int]:
    """(is_control, length) of a 4-byte header; the length is checked against the cap."""
    (word,) = HEADER.unpack(raw)
    length = word & LENGTH_MASK
    control = bool(word & CONTROL_BIT)
    if control and length == 0:
        raise InvalidData("control frame without a kind byte")
    if length > max_message_size:
        raise InvalidData(f"peer announced a {length}-byte message; the limit is {max_message_size}")
    return control, length


@dataclass(frozen=True)
class Message:
    data: bytes


@dataclass(frozen=True)
class Control:
    kind: int
    payload: bytes


Event = Message | Control


class FrameDecoder:
    """Incremental decoder: ``feed(data)`` then ``next_event()`` until it returns None."""

    def __init__(self, max_message_size: int = MAX_MESSAGE) -> None:
        if not 0 <= max_message_size <= MAX_MESSAGE:
            raise InvalidData(f"max_message_size must be within 0..{MAX_MESSAGE}")
        self._buf = bytearray()
        self._max = max_message_size
        self._pending: tuple[bool, int] | None = None

    @property
    def buffered(self) -> int:
        return len(self._buf)

    @property
    def in_frame(self) -> bool:
        """True when part of a frame has arrived (a truncation would lose it)."""
        return bool(self._buf) or self._pending is not None

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        self._buf += data

    def next_event(self) -> Event | None:
        if self._pending is None:
            if len(self._buf) < HEADER_SIZE:
                return None
            self._pending = parse_header(self._buf[:HEADER_SIZE], self._max)
            del self._buf[:HEADER_SIZE]
        control, length = self._pending
        if len(self._buf) < length:
            return None
        body = bytes(self._buf[:length])
        del self._buf[:length]
        self._pending = None
        if control:
            return Control(body[0], body[1:])
        return Message(body)
