"""The NATS server the tests use (nats://127.0.0.1:4222, JetStream on), and a probe for it."""

from __future__ import annotations

import socket

NATS_URL = "nats://127.0.0.1:4222"


def server_answers(host: str = "127.0.0.1", port: int = 4222) -> bool:
    """True when a NATS server greets us (its first bytes are ``INFO ``)."""
    try:
        with socket.create_connection((host, port), timeout=1.0) as s:
            s.settimeout(1.0)
            return s.recv(5) == b"INFO "
    except OSError:
        return False
