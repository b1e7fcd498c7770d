r"""String bindings as Windows writes them (RpcStringBindingCompose / RpcStringBindingParse).

``[object-uuid@]protseq:network-address[endpoint,option=value,...]``::

    ncalrpc:[orders]                      local, over the winipc pipe \\.\pipe\ncalrpc.orders (fast path)
    ncacn_np:[\\pipe\\orders]             a named pipe on this machine (host "" or ".")
    ncacn_ip_tcp:127.0.0.1[4747]          TCP (TLS when the binding is given an SSL context)
"""

from __future__ import annotations

import re
import socket
import uuid as uuidlib
from dataclasses import dataclass, field

from winipc import errors as W

PROTSEQS = ("ncalrpc", "ncacn_np", "ncacn_ip_tcp")
_ENDPOINT_NAME = re.compile(r"^[A-Za-z0-9_.\-]{1,200}$")
_PIPE_ENDPOINT = re.compile(r"^\\pipe\\([^\\/\x00]{1,200})$", re.IGNORECASE)
_LOCAL_HOSTS = {"", ".", "localhost"}


@dataclass(frozen=True)
class StringBinding:
    """One parsed string binding.

    Attributes:
        protseq: ``"ncalrpc"``, ``"ncacn_np"`` or ``"ncacn_ip_tcp"``.
        network_address: host name or address ("" for this machine).
        endpoint: the endpoint ("" when it is to be found: dynamic on a server, the endpoint
            mapper on a client). ncalrpc: a name; ncacn_np: ``\\pipe\\name``; TCP: a port.
        options: ``option=value`` pairs after the endpoint.
        object_uuid: the object UUID before ``@``, if any.
    """

    protseq: str
    network_address: str = ""
    endpoint: str = ""
    options: dict[str, str] = field(default_factory=dict)
    object_uuid: uuidlib.UUID | None = None

    @classmethod
    def parse(cls, text: str) -> StringBinding:
        """Parse (Win32: RpcStringBindingParse).

        Raises:
            InvalidStringBinding: (1700) the text is not a string binding.
            ProtseqNotSupported: (1703) another protocol sequence (ncadg_ip_udp, ncacn_http...).
            InvalidEndpointFormat: (1706) an endpoint that does not fit the protocol sequence.
        """
        if not isinstance(text, str) or len(text) > 1024:
            raise W.InvalidStringBinding(f"a string binding is a str of at most 1024 characters, not {text!r:.80}")
        obj: uuidlib.UUID | None = None
        rest = text.strip()
        if "@" in rest.split(":", 1)[0]:
            head, rest = rest.split("@", 1)
            try:
                obj = uuidlib.UUID(head)
            except ValueError:
                raise W.InvalidStringBinding(f"{text!r}: {head!r} is not an object UUID") from None
        m = re.fullmatch(r"([A-Za-z_0-9]+):([^\[\]]*)(?:\[(.*)\])?", rest)
        if not m:
            raise W.InvalidStringBinding(f"{text!r} is not protseq:address[endpoint]")
        protseq = m.group(1).lower()
        if protseq not in PROTSEQS:
            raise W.ProtseqNotSupported(f"{text!r}: protocol sequence {protseq!r}; winipc speaks {', '.join(PROTSEQS)}")
        inside = m.group(3) or ""
        endpoint, _, opts = inside.partition(",")
        options: dict[str, str] = {}
        for item in filter(None, (o.strip() for o in opts.split(","))):
            key, eq, value = item.partition("=")
            if not eq or not key:
                raise W.InvalidStringBinding(f"{text!r}: option {item!r} is not name=value")
            options[key.strip().lower()] = value.strip()
        b = cls(protseq, m.group(2).strip(), endpoint.strip(), options, obj)
        b.check_endpoint()
        return b

    def check_endpoint(self) -> None:
        ep = self.endpoint
        if self.protseq == "ncalrpc":
            if self.network_address not in _LOCAL_HOSTS:
                raise W.InvalidStringBinding(f"ncalrpc is local only; {self.network_address!r} is not this machine")
            if ep and not _ENDPOINT_NAME.match(ep):
                raise W.InvalidEndpointFormat(f"ncalrpc endpoint {ep!r}: 1..200 of A-Z a-z 0-9 _ . -")
        elif self.protseq == "ncacn_np":
            if ep and not _PIPE_ENDPOINT.match(ep):
                raise W.InvalidEndpointFormat(f"ncacn_np endpoint {ep!r} must be \\pipe\\name")
        elif ep and (not ep.isdigit() or not 0 <= int(ep) <= 65535):
            raise W.InvalidEndpointFormat(f"ncacn_ip_tcp endpoint {ep!r} must be a port 0..65535")

    @property
    def is_local(self) -> bool:
        """True when the binding names this machine (always for ncalrpc)."""
        return self.protseq == "ncalrpc" or is_local_host(self.network_address)

    @property
    def pipe_name(self) -> str:
        """The winipc pipe an ncalrpc or ncacn_np binding stands for (``\\\\host\\pipe\\name``
        for ncacn_np on another host)."""
        if self.protseq == "ncalrpc":
            return rf"\\.\pipe\ncalrpc.{self.endpoint}"
        m = _PIPE_ENDPOINT.match(self.endpoint)
        if not m:
            raise W.InvalidEndpointFormat(f"{self}: no pipe endpoint")
        host = "." if self.is_local else self.network_address
        return rf"\\{host}\pipe\{m.group(1)}"

    def with_endpoint(self, endpoint: str) -> StringBinding:
        return StringBinding(self.protseq, self.network_address, endpoint, dict(self.options), self.object_uuid)

    def __str__(self) -> str:
        return compose(self.protseq, self.network_address, self.endpoint, self.options, self.object_uuid)


def compose(protseq: str, network_address: str = "", endpoint: str = "", options: dict[str, str] | None = None,
            object_uuid: uuidlib.UUID | str | None = None) -> str:
    """Build a string binding (Win32: RpcStringBindingCompose)."""
    head = f"{uuidlib.UUID(str(object_uuid))}@" if object_uuid else ""
    opts = "".join(f",{k}={v}" for k, v in (options or {}).items())
    inside = f"[{endpoint}{opts}]" if endpoint or opts else ""
    return f"{head}{protseq}:{network_address}{inside}"


def is_local_host(host: str) -> bool:
    h = host.lower()
    return h in _LOCAL_HOSTS or h == socket.gethostname().lower()
