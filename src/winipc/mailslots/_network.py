"""Where mailslot messages go across machines: the domain, the subjects, the routes.

A writer's name picks the route (docs/mailslots.md):

* ``\\\\*\\mailslot\\x``: a broadcast to every host ("the primary domain").
* ``\\\\DOMAIN\\mailslot\\x``, where DOMAIN is this host's domain (``WINIPC_DOMAIN``,
  default ``WORKGROUP``) or a name that does not resolve as a host: a broadcast that only
  hosts of that domain take.
* ``\\\\host\\mailslot\\x``: one datagram to that host.

Over UDP a broadcast goes to the subnet broadcast address of every up, non-loopback IPv4
interface; a unicast to the host's address; both on the port of the name. With a NATS
server configured (``nats_url=`` or ``WINIPC_NATS_URL``) the same datagrams are published
on the name's subjects instead, and reach every host connected to the NATS cluster.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from winipc._backends import os_backend as B
from winipc._core.names import ObjectName, fold
from winipc._wire import mailslot as wire

DEFAULT_DOMAIN = "WORKGROUP"


def domain_name() -> str:
    """This host's domain for mailslot broadcasts: ``WINIPC_DOMAIN``, default ``WORKGROUP``."""
    return os.environ.get("WINIPC_DOMAIN") or DEFAULT_DOMAIN


def nats_subjects(name: str) -> list[str]:
    """The NATS subjects a network-accepting mailslot of ``name`` listens on."""
    return [
        wire.nats_subject(name),
        wire.nats_subject(name, domain=domain_name()),
        wire.nats_subject(name, host=B.host_name()),
    ]


@dataclass(frozen=True)
class Route:
    """Where a remote writer's messages go.

    Attributes:
        broadcast: True for ``*`` and domain names.
        domain: the domain of a domain broadcast, "" otherwise.
        host: the target host of a unicast ("" for broadcasts).
        address: the host's IPv4 address for UDP unicast (None for broadcasts or NATS).
    """

    broadcast: bool
    domain: str = ""
    host: str = ""
    address: str | None = None

    @property
    def description(self) -> str:
        if not self.broadcast:
            return f"host {self.host}"
        return f"domain {self.domain}" if self.domain else "every host"


def route(oname: ObjectName, *, over_nats: bool) -> Route:
    """Decide where a writer of a remote mailslot name sends (see the module docstring)."""
    server = oname.server
    if server == "*":
        return Route(True)
    if fold(server) == fold(domain_name()):
        return Route(True, domain=server)
    if over_nats:
        return Route(False, host=server)
    address = B.resolve_ipv4(server)
    if address is None:
        return Route(True, domain=server)  # not a host: Windows takes it as a domain
    return Route(False, host=server, address=address)
