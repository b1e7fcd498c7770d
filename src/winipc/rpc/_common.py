"""What both ends of an RPC connection share: authentication levels, caller identity, faults."""

from __future__ import annotations

import enum
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from winipc import errors as W
from winipc._wire import rpc as wire


class AuthLevel(enum.IntEnum):
    """Authentication levels (RPC_C_AUTHN_LEVEL_*).

    NONE: anyone the endpoint admits. CONNECT: the caller is identified when it connects
    (local peers by their kernel credentials, remote ones by a shared key or a TLS client
    certificate). PKT_INTEGRITY: also every frame carries an HMAC-SHA256 (on local
    channels the kernel already guarantees it). PKT_PRIVACY: TLS on TCP (local channels
    are private by construction).
    """

    NONE = wire.AUTHN_LEVEL_NONE
    CONNECT = wire.AUTHN_LEVEL_CONNECT
    PKT_INTEGRITY = wire.AUTHN_LEVEL_PKT_INTEGRITY
    PKT_PRIVACY = wire.AUTHN_LEVEL_PKT_PRIVACY
    INTEGRITY = wire.AUTHN_LEVEL_PKT_INTEGRITY
    PRIVACY = wire.AUTHN_LEVEL_PKT_PRIVACY


@dataclass(frozen=True)
class AuthInfo:
    """A client's authentication (Win32: RpcBindingSetAuthInfo).

    Args:
        level: the :class:`AuthLevel` wanted.
        principal: the name the server knows this client's key by.
        key: the shared secret (bytes, at least 16) the server registered for ``principal``.
    """

    level: AuthLevel = AuthLevel.NONE
    principal: str | None = None
    key: bytes | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "level", AuthLevel(self.level))
        if self.key is not None and (not isinstance(self.key, bytes) or len(self.key) < 16):
            raise W.InvalidParameter("key must be bytes, at least 16 of them")
        if (self.key is None) != (self.principal is None):
            raise W.InvalidParameter("principal and key go together")


@dataclass(frozen=True)
class ClientInfo:
    """Who is calling (Win32: RpcBindingInqAuthClient, RpcServerInqCallAttributes).

    Attributes:
        local: True on ncalrpc / local ncacn_np.
        pid, uid, gid: the caller's kernel credentials (local callers only; else None).
        principal: ``"uid:N"`` for local callers, the key's principal name, or the TLS
            client certificate's subject common name; None for anonymous remote callers.
        auth_level: the level the connection negotiated.
        tls: the connection is TLS.
        address: the remote (host, port) for TCP callers.
    """

    local: bool
    pid: int | None
    uid: int | None
    gid: int | None
    principal: str | None
    auth_level: AuthLevel
    tls: bool = False
    address: Any = None


_current = threading.local()


class Call:
    """The call in progress in this server thread: :func:`current_call`."""

    __slots__ = ("_server_conn", "association", "call_id", "channel", "client")

    def __init__(self, client: ClientInfo, channel: Any, association: Any, server_conn: Any, call_id: int) -> None:
        self.client = client
        self.channel = channel
        self.association = association
        self._server_conn = server_conn
        self.call_id = call_id

    @property
    def cancelled(self) -> bool:
        """True when the client cancelled the call or went away (Win32: RpcTestCancel)."""
        return bool(self.channel.has_input())

    def callback(self, interface: type) -> Any:
        """A proxy for a callback interface the calling client serves, over this connection."""
        return self._server_conn.callback_proxy(interface)


def current_call() -> Call:
    """The call this server thread is running (Win32: the implicit binding handle).

    Raises:
        InvalidHandle: not inside a server method.
    """
    call = getattr(_current, "call", None)
    if call is None:
        raise W.InvalidHandle("current_call() is only meaningful inside an RPC server method")
    if type(call) is tuple:  # (make_call, call id): made at the first question, kept for the call
        call = _current.call = call[0](call[1])
        if call is None:
            raise W.InvalidHandle("current_call() is only meaningful inside an RPC server method")
    return call  # type: ignore[no-any-return]


def current_holder() -> threading.local:
    """Where :func:`set_current` keeps the call (its ``call`` attribute): the C path sets it too."""
    return _current


def set_current(call: Call | tuple[Callable[[int], Call | None], int] | None) -> None:
    """The call this thread runs: a Call, or how to make it (``(make_call, call_id)``), or None."""
    _current.call = call


def fault_of(exc: BaseException) -> tuple[int, str, str]:
    """What a FAULT frame says about an exception raised by a method."""
    if isinstance(exc, W.WinIPCError):
        return exc.winerror, type(exc).__name__, exc.strerror or str(exc)
    return W.RPC_S_CALL_FAILED, type(exc).__name__, str(exc)


def error_of(status: int, type_name: str, message: str) -> W.WinIPCError:
    """The client's exception for a FAULT or BIND_NAK: the same winipc class, else ServerFault."""
    known = getattr(W, type_name, None) if type_name else None
    if (isinstance(known, type) and issubclass(known, W.WinIPCError)
            and known not in (W.ServerFault, W.MoreData)):
        return known(message, winerror=status)
    err = W.ServerFault(f"{type_name}: {message}" if type_name else message, winerror=status)
    err.remote_type = type_name
    return err
