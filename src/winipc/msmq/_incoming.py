"""The drop-file format of a shared queue's ``incoming/`` folder (no I/O: bytes in and out).

A user granted only the send right (MQSEC_WRITE_MESSAGE) cannot be given the queue's
SQLite file: whoever can write it can read and delete every message. Such a sender
writes each message (or each ``send_many`` batch) as one file in the queue's
``incoming/`` folder instead; a process with database access ingests the file into the
store. The layout (docs/wire/msmq-store.md, "Incoming files") is, little-endian::

    offset  size  field
    0       4     magic b"WQIN"
    4       1     version (1)
    5       1     flags: bit 0 = sent with SINGLE_MESSAGE (one transaction, all or none)
    6       2     reserved, 0
    8       4     count of records, 1..MAX_COUNT
    12      ...   count x record: u32 props length, u32 body length, props, body
    end-4   4     CRC-32 (zlib) of every byte before it

``props`` is the msgpack map of the message properties (``winipc.msmq.Message`` field
names, as in the store's ``msg.props``); ``body`` is the body bytes (raw for body_type
"bytes", msgpack for "msgpack"). The file is written under a temporary name
(``.tmp-<name>``) and renamed to ``<16 hex sender time ns>-<32 hex random>.msg``.

Everything here is a pure function, capped before it allocates, and raises
:class:`IncomingFormatError` (a ``ValueError``) for anything that is not a well-formed,
valid batch: a crafted file is refused, never half-read and never unpickled.
"""

from __future__ import annotations

import dataclasses
import re
import struct
import zlib
from collections.abc import Sequence
from typing import Any

import msgpack

from winipc import errors as W
from winipc.msmq import _message as M

MAGIC = b"WQIN"
VERSION = 1
FLAG_SINGLE_MESSAGE = 0x01
_HEADER = struct.Struct("<4sBBHI")
_RECORD = struct.Struct("<II")
_CRC = struct.Struct("<I")
#: Largest property map of one message (bytes).
MAX_PROPS = 64 * 1024
#: Most messages in one file.
MAX_COUNT = 100_000
#: Largest file (bytes): one largest body, its properties, and framing to spare.
MAX_FILE = M.MAX_BODY + 1024 * 1024
#: File names: "<16 hex>-<32 hex>.msg"; a file being written is ".tmp-" + that name.
NAME_RE = re.compile(r"\A[0-9a-f]{16}-[0-9a-f]{32}\.msg\Z")
TEMP_PREFIX = ".tmp-"
_ID_RE = re.compile(r"\A\{[0-9A-F]{8}-[0-9A-F]{4}-[0-9A-F]{4}-[0-9A-F]{4}-[0-9A-F]{12}\}\\[0-9]{1,19}\Z")
#: Properties a drop file may not set: the ingesting process sets them.
_QUEUE_SET = ("lookup_id", "arrived_time", "sender_uid", "destination_queue", "abort_count")


class IncomingFormatError(ValueError):
    """A drop file is malformed, too large, or holds invalid messages."""


@dataclasses.dataclass
class Batch:
    """A decoded drop file: its messages (bodies decoded) with their stored body bytes."""

    single_message: bool
    messages: list[tuple[M.Message, bytes]]


def is_final_name(name: str) -> bool:
    return NAME_RE.match(name) is not None


def is_temp_name(name: str) -> bool:
    return name.startswith(TEMP_PREFIX) and is_final_name(name[len(TEMP_PREFIX):])


def overhead(props: bytes) -> int:
    """Bytes a record adds to a file besides its body."""
    return _RECORD.size + len(props)


def empty_size() -> int:
    """Bytes of a file with no records (header and CRC)."""
    return _HEADER.size + _CRC.size


def encode(records: Sequence[tuple[bytes, bytes]], *, single_message: bool) -> bytes:
    """A drop file of ``records`` (msgpack props, body bytes). Raises IncomingFormatError."""
    if not 1 <= len(records) <= MAX_COUNT:
        raise IncomingFormatError(f"a drop file holds 1..{MAX_COUNT} messages, not {len(records)}")
    parts = [_HEADER.pack(MAGIC, VERSION, FLAG_SINGLE_MESSAGE if single_message else 0, 0, len(records))]
    for props, body in records:
        if len(props) > MAX_PROPS:
            raise IncomingFormatError(f"message properties are {len(props)} bytes; at most {MAX_PROPS}")
        parts += [_RECORD.pack(len(props), len(body)), props, body]
    data = b"".join(parts)
    if len(data) + _CRC.size > MAX_FILE:
        raise IncomingFormatError(f"a drop file is at most {MAX_FILE} bytes, not {len(data) + _CRC.size}")
    return data + _CRC.pack(zlib.crc32(data))


def _props(raw: bytes) -> dict[str, Any]:
    try:
        rec = msgpack.unpackb(
            raw, raw=False, strict_map_key=True, max_str_len=MAX_PROPS, max_bin_len=MAX_PROPS,
            max_array_len=1024, max_map_len=1024, max_ext_len=0,
        )
    except Exception as exc:  # msgpack raises several types on bad data
        raise IncomingFormatError(f"message properties do not decode: {exc}") from None
    if not isinstance(rec, dict):
        raise IncomingFormatError("message properties are not a map")
    return rec


def _message(rec: dict[str, Any], body: bytes) -> M.Message:
    body_type = rec.get("body_type", M.BODY_BYTES)
    if body_type not in (M.BODY_BYTES, M.BODY_MSGPACK):
        raise IncomingFormatError(f"unknown body type {body_type!r}")
    for name in _QUEUE_SET:
        rec.pop(name, None)
    try:
        m = M.from_record(rec, M.decode_body(body, body_type))
        M.validate(m)
    except (W.CorruptQueueError, W.IllegalPropertyValue) as exc:
        raise IncomingFormatError(str(exc.strerror or exc)) from None
    if not _ID_RE.match(m.id):
        raise IncomingFormatError(f"message id {m.id[:80]!r} is not of the form {{GUID}}\\N")
    if m.message_class == M.MessageClass.REPORT:
        raise IncomingFormatError("report messages cannot be sent")
    return m


def decode(data: bytes) -> Batch:
    """Parse and check one drop file. Raises IncomingFormatError (never anything else)."""
    n = len(data)
    if n > MAX_FILE:
        raise IncomingFormatError(f"drop file of {n} bytes; at most {MAX_FILE}")
    if n < _HEADER.size + _CRC.size:
        raise IncomingFormatError(f"drop file of {n} bytes is shorter than its header")
    magic, version, flags, reserved, count = _HEADER.unpack_from(data, 0)
    if magic != MAGIC:
        raise IncomingFormatError(f"not a drop file (magic {magic!r})")
    if version != VERSION:
        raise IncomingFormatError(f"drop file version {version}, expected {VERSION}")
    if flags & ~FLAG_SINGLE_MESSAGE or reserved:
        raise IncomingFormatError("drop file has unknown flags")
    if not 1 <= count <= MAX_COUNT:
        raise IncomingFormatError(f"drop file claims {count} messages; 1..{MAX_COUNT} allowed")
    end = n - _CRC.size
    (crc,) = _CRC.unpack_from(data, end)
    if zlib.crc32(memoryview(data)[:end]) != crc:
        raise IncomingFormatError("drop file fails its checksum (torn or damaged)")
    out: list[tuple[M.Message, bytes]] = []
    seen: set[str] = set()
    at = _HEADER.size
    for _ in range(count):
        if end - at < _RECORD.size:
            raise IncomingFormatError("drop file ends inside a record header")
        plen, blen = _RECORD.unpack_from(data, at)
        at += _RECORD.size
        if plen > MAX_PROPS or blen > M.MAX_BODY or plen + blen > end - at:
            raise IncomingFormatError(f"record lengths {plen}+{blen} exceed the limits or the file")
        rec = _props(data[at:at + plen])
        body = data[at + plen:at + plen + blen]
        at += plen + blen
        m = _message(rec, body)
        if m.id in seen:
            raise IncomingFormatError(f"message id {m.id!r} appears twice")
        seen.add(m.id)
        out.append((m, body))
    if at != end:
        raise IncomingFormatError(f"{end - at} bytes after the last record")
    return Batch(bool(flags & FLAG_SINGLE_MESSAGE), out)
