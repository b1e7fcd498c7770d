"""What the mailslot server and its local writers share: the packet on the local socket.

A mailslot's directory in the namespace holds ``slot.sock``, an AF_UNIX SOCK_SEQPACKET
socket the server listens on. Each writer handle is one connection; each message is one
packet (so a message is never split or merged), framed as (docs/wire/mailslot.md)::

    off size field
    0   2    magic b"ML"
    2   1    version 1
    3   1    kind: 0 = payload follows inline, 1 = payload in the memfd passed with the packet
    4   4    payload length (bytes)
    8   8    CLOCK_MONOTONIC ns when the writer sent it (orders messages across writers)

Payloads over :data:`INLINE_MAX` travel in a memfd passed with SCM_RIGHTS, so neither the
socket buffer nor the kernel's packet size limits a message.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

HEADER = struct.Struct("<2sBBIQ")
MAGIC = b"ML"
VERSION = 1
KIND_INLINE = 0
KIND_MEMFD = 1
INLINE_MAX = 64 * 1024
#: largest local message when the mailslot was created with ``max_message_size=0`` (bytes)
LOCAL_LIMIT = 256 * 1024 * 1024
SOCKET_NAME = "slot.sock"
#: the packet a server sends a writer it refuses, just before it closes the connection
REFUSED = b"\x00refused"
#: the largest max_message_size CreateMailslot takes (a DWORD)
MAX_DWORD = 0xFFFF_FFFF


@dataclass(frozen=True)
class MailslotInfo:
    """GetMailslotInfo's four values.

    Attributes:
        max_message_size: bytes, as given at creation (0 = any size).
        next_size: bytes of the next message, or None when the mailslot is empty
            (MAILSLOT_NO_MESSAGE).
        message_count: messages waiting.
        read_timeout: seconds a read waits; None = forever (MAILSLOT_WAIT_FOREVER).
    """

    max_message_size: int
    next_size: int | None
    message_count: int
    read_timeout: float | None


@dataclass(frozen=True)
class MailslotMessage:
    """One message with what the mailslot knows of its sender.

    Attributes:
        data: the message (bytes).
        sender_pid: the writer's process id (for network messages, as the sender stated it).
        sender_uid: the writer's user id, checked by the kernel; None for network messages.
        sender_host: the sending host's name for network messages; None for local ones.
        address: the sender's ``(ip, port)`` for UDP messages; None otherwise.
        transport: ``"local"``, ``"udp"`` or ``"nats"``.
    """

    data: bytes
    sender_pid: int
    sender_uid: int | None = None
    sender_host: str | None = None
    address: tuple[str, int] | None = None
    transport: str = "local"


def effective_limit(max_message_size: int) -> int:
    """The largest local message a mailslot takes (bytes): its maximum, or LOCAL_LIMIT."""
    if max_message_size == 0 or max_message_size > LOCAL_LIMIT:
        return LOCAL_LIMIT
    return max_message_size
