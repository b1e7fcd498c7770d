"""Mailslots: one-way message slots, on this machine, to a host, or broadcast to every host.

Server (the only reader)::

    with winipc.mailslots.Mailslot(r"\\\\.\\mailslot\\events", read_timeout=5) as slot:
        print(slot.read())

Writers (any number)::

    winipc.mailslots.write_mailslot(r"\\\\.\\mailslot\\events", b"hello")
    winipc.mailslots.write_mailslot(r"\\\\*\\mailslot\\events", b"to every host")  # <= 424 bytes

See docs/mailslots.md for the mapping to CreateMailslot and friends.
"""

from winipc.mailslots._local import LOCAL_LIMIT, MailslotInfo, MailslotMessage
from winipc.mailslots._network import DEFAULT_DOMAIN, domain_name
from winipc.mailslots._server import Mailslot
from winipc.mailslots._writer import MailslotWriter, open_mailslot, write_mailslot

#: read timeout meaning "wait forever" (MAILSLOT_WAIT_FOREVER)
MAILSLOT_WAIT_FOREVER = None

__all__ = [
    "DEFAULT_DOMAIN",
    "LOCAL_LIMIT",
    "MAILSLOT_WAIT_FOREVER",
    "Mailslot",
    "MailslotInfo",
    "MailslotMessage",
    "MailslotWriter",
    "domain_name",
    "open_mailslot",
    "write_mailslot",
]
