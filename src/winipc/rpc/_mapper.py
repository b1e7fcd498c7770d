"""The endpoint mapper on the network: bind by interface on another host.

Windows answers endpoint-mapper questions from other machines on TCP port 135
(RpcEpResolveBinding with a host in the binding). winipc has no daemon, so the servers
share the job: every running :class:`~winipc.rpc.RpcServer` that registers its endpoints
and listens on ``ncacn_ip_tcp`` tries to listen on the mapper's port (:func:`epm_port`) at
each address it serves on. The first to get the port answers for the whole machine, from
the same machine-wide records :mod:`winipc.rpc._epm` keeps; the others try again every
:data:`RETRY` seconds, so when it stops or dies another takes over. The mapper is an RPC
interface of its own (:class:`EndpointMapper`), served by a separate server that admits
anonymous callers to it and to nothing else.

An answer lists only the TCP bindings a caller can reach through the address it reached
the mapper on: those of servers listening on every address, or on exactly that one.
"""

from __future__ import annotations

import contextlib
import threading
from typing import TYPE_CHECKING, Any

from winipc import errors as W
from winipc._core import env
from winipc.rpc import _epm
from winipc.rpc._binding import StringBinding
from winipc.rpc._common import current_call
from winipc.rpc._idl import UInt16, interface

if TYPE_CHECKING:
    from winipc.rpc._server import RpcServer

#: The mapper's TCP port when ``WINIPC_RPC_EPM_PORT`` is not set: Windows' port 135 plus
#: 10000, so that servers not run by root can listen on it.
DEFAULT_PORT = 10135
#: Seconds between a server's attempts to take the mapper's port while another holds it.
RETRY = 1.0
#: Seconds a remote lookup may take (connect and call).
LOOKUP_TIMEOUT = 10.0

_WILDCARDS = ("", "0.0.0.0", "::", "*")


def epm_port() -> int:
    """The endpoint mapper's TCP port: ``$WINIPC_RPC_EPM_PORT``, else :data:`DEFAULT_PORT`.

    0 turns the network endpoint mapper off (servers do not serve it, remote lookups fail).

    Raises:
        InvalidParameter: the variable is not a port number (0..65535).
    """
    return env.port("WINIPC_RPC_EPM_PORT", DEFAULT_PORT, "no network endpoint mapper")


@interface(uuid="6d5e0e1c-3b0a-4f42-9c5e-2b8f4a1d7e35", version=(1, 0))
class EndpointMapper:
    """What the network endpoint mapper answers (winipc's, not DCE's ``ept_*`` operations)."""

    def lookup(self, uuid: str, major: UInt16, minor: UInt16, protseq: str) -> list[str]:
        """String bindings of servers of ``uuid`` (same major, minor at least ``minor``)
        that the caller can reach; ``protseq`` "" for any (only ``ncacn_ip_tcp`` is reachable)."""
        raise NotImplementedError

    def entries(self) -> list[list[str]]:
        """Every reachable element: ``[uuid, "major.minor", interface name, binding, annotation]``."""
        raise NotImplementedError


def _reachable(binding: str, local_address: str) -> bool:
    try:
        sb = StringBinding.parse(binding)
    except W.WinIPCError:
        return False
    return sb.protseq == "ncacn_ip_tcp" and sb.network_address in (*_WILDCARDS, local_address)


class _MapperImpl(EndpointMapper):
    def _visible(self) -> list[_epm.Entry]:
        sock = getattr(current_call().channel, "sock", None)
        local = str(sock.getsockname()[0]) if sock is not None else ""
        return [e for e in _epm.entries() if _reachable(e.binding, local)]

    def lookup(self, uuid: str, major: int, minor: int, protseq: str) -> list[str]:
        if protseq not in ("", "ncacn_ip_tcp"):
            return []
        found = [e.binding for e in self._visible()
                 if e.uuid == uuid and e.version[0] == major and e.version[1] >= minor]
        return list(dict.fromkeys(found))

    def entries(self) -> list[list[str]]:
        return [[e.uuid, f"{e.version[0]}.{e.version[1]}", e.name, e.binding, e.annotation] for e in self._visible()]


class Holder:
    """A server's share of the network endpoint mapper: holds the port at ``addresses``
    while it can, retrying every :data:`RETRY` seconds (a daemon thread) while it cannot."""

    def __init__(self, addresses: list[str], port: int) -> None:
        self.addresses = addresses
        self.port = port
        self._servers: dict[str, RpcServer] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="winipc-rpc-epm", daemon=True)
        self._thread.start()

    @property
    def held(self) -> list[str]:
        """The addresses at which this process answers for the machine now."""
        return sorted(self._servers)

    def _try(self, address: str) -> None:
        from winipc.rpc._server import RpcServer

        srv = RpcServer(register_endpoints=False, max_connections=64, max_frame=1 << 20)
        try:
            srv.register(_MapperImpl())
            host = "" if address in ("", "0.0.0.0") else address
            srv.listen(f"ncacn_ip_tcp:{host}[{self.port}]", allow_anonymous=True)
            srv.start()
        except W.AccessDenied:  # another server holds the port
            srv.stop()
            return
        self._servers[address] = srv

    def _run(self) -> None:
        while not self._stop.is_set():
            for address in self.addresses:
                if address not in self._servers and not self._stop.is_set():
                    self._try(address)
            if len(self._servers) == len(self.addresses):
                return  # all held: nothing to retry until stopped
            self._stop.wait(RETRY)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5.0)
        servers, self._servers = self._servers, {}
        for srv in servers.values():
            with contextlib.suppress(Exception):
                srv.stop()


def _ask(host: str, timeout: float | None) -> Any:
    from winipc.rpc._client import Binding

    port = epm_port()
    if port == 0:
        raise W.InvalidParameter("WINIPC_RPC_EPM_PORT=0: the network endpoint mapper is turned off")
    return Binding(StringBinding("ncacn_ip_tcp", host, str(port)), timeout=timeout, connect_timeout=timeout)


def _on_host(binding: str, host: str) -> StringBinding | None:
    """``binding`` with ``host`` as its address (None for what is not a TCP binding)."""
    try:
        sb = StringBinding.parse(binding)
    except W.WinIPCError:
        return None
    if sb.protseq != "ncacn_ip_tcp" or not sb.endpoint:
        return None
    return StringBinding("ncacn_ip_tcp", host, sb.endpoint)


def _unavailable(host: str, exc: W.WinIPCError) -> W.ServerUnavailable:
    return W.ServerUnavailable(f"no endpoint mapper answers on {host} port {epm_port()} (no RPC server there "
                               f"listens on ncacn_ip_tcp, or WINIPC_RPC_EPM_PORT differs): {exc.strerror}")


def remote_lookup(host: str, uuid: str, major: int, minor: int, *,
                  timeout: float | None = LOOKUP_TIMEOUT) -> list[StringBinding]:
    """Ask ``host``'s endpoint mapper; the bindings it returns carry ``host`` as their address.

    Raises:
        ServerUnavailable: (1722) nothing answers on the mapper's port there.
        InvalidParameter: the network endpoint mapper is turned off (port 0).
    """
    try:
        with _ask(host, timeout) as b:
            found = b.client(EndpointMapper).lookup(uuid, major, minor, "")
    except W.ServerUnavailable as exc:
        raise _unavailable(host, exc) from None
    out = [_on_host(s, host) for s in found]
    return [sb for sb in out if sb is not None]


def remote_entries(host: str, *, timeout: float | None = LOOKUP_TIMEOUT) -> list[dict[str, str]]:
    """``host``'s endpoint mapper elements: dicts of interface, uuid, version ("major.minor"),
    binding (with ``host`` as its address) and annotation.

    Raises:
        ServerUnavailable: (1722) nothing answers on the mapper's port there.
        InvalidParameter: the network endpoint mapper is turned off (port 0).
    """
    try:
        with _ask(host, timeout) as b:
            rows = b.client(EndpointMapper).entries()
    except W.ServerUnavailable as exc:
        raise _unavailable(host, exc) from None
    out = []
    for row in rows:
        sb = _on_host(row[3], host) if len(row) == 5 else None
        if sb is not None:
            out.append({"interface": row[2], "uuid": row[0], "version": row[1], "binding": str(sb),
                        "annotation": row[4]})
    return out
