"""TLS on the command line: ``--tls-cert``, ``--tls-key`` and ``--tls-ca`` for the commands
that reach other machines (``pipe serve|send|cat``, ``rpc serve|call``).

One declaration of the three options (:func:`tls_options`) and one way of turning their
files into an :class:`ssl.SSLContext` (:meth:`TlsFiles.server_context`,
:meth:`TlsFiles.client_context`). A file that cannot be read or is not what its option
says is a usage error (exit status 2) naming that option. Which combinations a command
accepts is the command's business; :meth:`TlsFiles.check_pair` and
:meth:`TlsFiles.refuse` give the shared wording. :func:`pipe_port_status` is for servers
whose pipes take clients from other machines (``pipe serve --remote``, ``rpc serve`` on
``ncacn_np`` with ``--tls-ca``).
"""

from __future__ import annotations

import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, TypeVar

import click

from winipc.pipes import _remote

F = TypeVar("F", bound=Callable[..., object])

CERT = "--tls-cert"
KEY = "--tls-key"
CA = "--tls-ca"

#: How long a server waits to hold the pipe port before it says it serves (another
#: process may hold it, and then passes this one's clients on).
PORT_WAIT = 1.0

_HELP = {
    "server": (
        "PEM certificate (chain) this server presents.",
        f"PEM private key of {CERT}.",
        "PEM certificate(s) of the CA(s) that issue the client certificates admitted; "
        "clients must then present one (CERT_REQUIRED).",
    ),
    "client": (
        "PEM certificate this client presents (servers on other machines admit clients by "
        "its common name).",
        f"PEM private key of {CERT}.",
        "Trust the server certificates the PEM certificate(s) in FILE sign (default: the "
        "system's CAs); the host name is checked against the certificate.",
    ),
}


def tls_options(side: Literal["server", "client"], where: str = "") -> Callable[[F], F]:
    """The options ``--tls-cert FILE``, ``--tls-key FILE`` and ``--tls-ca FILE``, which
    reach the command as ``tls_cert``, ``tls_key`` and ``tls_ca`` (str or None).

    Args:
        side: whose files they are, which sets the help texts.
        where: appended to ``--tls-cert``'s help: when the options apply.
    """
    cert_help, key_help, ca_help = _HELP[side]
    if where:
        cert_help = f"{cert_help} {where}"
    options = [
        click.option(CERT, "tls_cert", type=click.Path(dir_okay=False), metavar="FILE", help=cert_help),
        click.option(KEY, "tls_key", type=click.Path(dir_okay=False), metavar="FILE", help=key_help),
        click.option(CA, "tls_ca", type=click.Path(dir_okay=False), metavar="FILE", help=ca_help),
    ]

    def decorate(f: F) -> F:
        for option in reversed(options):
            f = option(f)
        return f

    return decorate


def _read(path: str, option: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as exc:
        raise click.BadParameter(f"cannot read {path}: {exc.strerror or exc}", param_hint=option) from None


def _require_pem(path: str, option: str, marker: bytes, what: str) -> None:
    if marker not in _read(path, option):
        raise click.BadParameter(f"{path} holds no PEM {what}", param_hint=option)


@dataclass(frozen=True)
class TlsFiles:
    """The files the TLS options named (None: not given)."""

    cert: str | None = None
    key: str | None = None
    ca: str | None = None

    @property
    def given(self) -> list[str]:
        """The options given, in declaration order (``["--tls-cert", ...]``)."""
        return [opt for opt, value in ((CERT, self.cert), (KEY, self.key), (CA, self.ca)) if value is not None]

    @property
    def has_identity(self) -> bool:
        """A certificate and its key were given."""
        return self.cert is not None and self.key is not None

    def check_pair(self) -> None:
        """Raises click.UsageError: one of ``--tls-cert`` and ``--tls-key`` without the other."""
        if (self.cert is None) != (self.key is None):
            raise click.UsageError(f"{CERT} and {KEY} go together")

    def refuse(self, why: str) -> None:
        """Raises click.UsageError naming the first option given, ``why`` saying why
        (e.g. ``"applies with --remote"``); nothing when none was given."""
        if self.given:
            raise click.UsageError(f"{self.given[0]} {why}")

    def _load_identity(self, ctx: ssl.SSLContext) -> None:
        assert self.cert is not None and self.key is not None
        _require_pem(self.cert, CERT, b"-----BEGIN CERTIFICATE-----", "certificate")
        _require_pem(self.key, KEY, b"PRIVATE KEY-----", "private key")
        try:
            ctx.load_cert_chain(self.cert, self.key)
        except ssl.SSLError as exc:
            if "KEY_VALUES_MISMATCH" in str(exc):
                raise click.BadParameter(f"{self.key} is not the key of {self.cert}", param_hint=KEY) from None
            raise click.BadParameter(f"cannot load {self.cert} / {self.key}: {exc}", param_hint=CERT) from None
        except OSError as exc:
            raise click.BadParameter(f"cannot load {self.cert} / {self.key}: {exc}", param_hint=CERT) from None

    def _load_ca(self, ctx: ssl.SSLContext) -> None:
        assert self.ca is not None
        _require_pem(self.ca, CA, b"-----BEGIN CERTIFICATE-----", "certificate")
        try:
            ctx.load_verify_locations(cafile=self.ca)
        except (OSError, ssl.SSLError) as exc:
            raise click.BadParameter(f"cannot load {self.ca}: {exc}", param_hint=CA) from None

    def server_context(self) -> ssl.SSLContext:
        """A server-side context presenting ``cert``/``key``; with ``ca``, it requires
        client certificates that ``ca`` signs (``verify_mode=CERT_REQUIRED``), as remote
        named pipes and ncacn_np from other machines need.

        Raises:
            click.BadParameter: a file is unreadable or not what its option says (named).
        """
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self._load_identity(ctx)
        if self.ca is not None:
            self._load_ca(ctx)
            ctx.verify_mode = ssl.CERT_REQUIRED
        return ctx

    def client_context(self) -> ssl.SSLContext:
        """A client-side context that verifies servers against ``ca`` only (default: the
        system's CAs) and checks their host name, presenting ``cert``/``key`` when given.

        Raises:
            click.BadParameter: a file is unreadable or not what its option says (named).
        """
        if self.ca is None:
            ctx = ssl.create_default_context()
        else:  # FILE's CAs only, not the system's as well
            _require_pem(self.ca, CA, b"-----BEGIN CERTIFICATE-----", "certificate")
            try:
                ctx = ssl.create_default_context(cafile=self.ca)
            except (OSError, ssl.SSLError) as exc:
                raise click.BadParameter(f"cannot load {self.ca}: {exc}", param_hint=CA) from None
        if self.has_identity:
            self._load_identity(ctx)
        return ctx


def pipe_port_status(wait: float = PORT_WAIT) -> str:
    """Where clients from other machines come in, for a server's status line, once this
    process holds the pipe port or has waited ``wait`` seconds for it.

    Call it after creating the pipe instances that take remote clients: they start this
    process's turn at the port (docs/pipes.md, "Remote pipes").
    """
    port = _remote.pipe_port()
    if port == 0:
        return "none can come: WINIPC_PIPE_PORT=0 turns remote pipes off"
    deadline = time.monotonic() + wait
    while not _remote.gateway_held() and time.monotonic() < deadline:
        time.sleep(0.01)
    holder = "this process" if _remote.gateway_held() else "another process"
    return f"TLS through pipe port {port}, held by {holder}"
