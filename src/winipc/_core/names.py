"""Win32 object names: parsing, case folding, and the key each name is stored under.

Accepted forms (DESIGN.md section 3)::

    \\\\.\\pipe\\name          local named pipe             (machine-wide namespace)
    \\\\server\\pipe\\name     named pipe on another host
    \\\\.\\mailslot\\a\\b      local mailslot (pseudo-directories allowed)
    \\\\*\\mailslot\\name      broadcast to every host's mailslot
    \\\\host\\mailslot\\name   a mailslot on a host or every host of a domain
    Global\\name             kernel object, machine-wide
    Local\\name              kernel object, this user's session
    name                     kernel object, same as Local\\name

Names compare case-insensitively with Windows' simple (one-to-one) upper-casing; the
creator's spelling is kept for display.
"""

from __future__ import annotations

import hashlib
import socket
from dataclasses import dataclass
from typing import Literal

from winipc.errors import InvalidName

#: Win32 limits: a pipe name is at most 256 characters; other names MAX_PATH (260).
MAX_PIPE_NAME = 256
MAX_NAME = 260

Family = Literal["pipe", "mailslot", "kernel"]
Scope = Literal["global", "local"]

_LOCAL_SERVERS = {".", "localhost", "127.0.0.1", "::1"}


def fold(name: str) -> str:
    """Windows' case folding for object names: simple upper-casing, character by character."""
    out = []
    for ch in name:
        up = ch.upper()
        out.append(up if len(up) == 1 else ch)
    return "".join(out)


@dataclass(frozen=True)
class ObjectName:
    """A parsed object name.

    Attributes:
        family: ``"pipe"``, ``"mailslot"`` or ``"kernel"``.
        server: ``"."`` for this machine, ``"*"`` for a broadcast, else a host or domain.
        scope: ``"global"`` (machine-wide root) or ``"local"`` (per-user root).
        name: the object's own name as the creator spelled it (without prefixes).
        raw: the full string as given.
    """

    family: Family
    server: str
    scope: Scope
    name: str
    raw: str

    @property
    def key(self) -> str:
        """The case-folded identity of the object within its namespace."""
        return fold(self.name)

    @property
    def is_local(self) -> bool:
        """True when the name designates an object on this machine."""
        return self.server == "."

    @property
    def storage_id(self) -> str:
        """File-system safe, fixed-length id of the object (a hash of its key).

        Pipes, mailslots and kernel objects are separate namespaces on Windows, so the
        family is part of the id; kernel objects of every type share one namespace.
        """
        digest = hashlib.sha256(f"{self.family}\0{self.key}".encode()).hexdigest()[:24]
        return f"{self.family}.{digest}"

    @property
    def display(self) -> str:
        """The canonical Win32 spelling (``\\\\.\\pipe\\Name``, ``Global\\Name``, ...)."""
        if self.family == "kernel":
            return f"{'Global' if self.scope == 'global' else 'Local'}\\{self.name}"
        return f"\\\\{self.server}\\{self.family}\\{self.name}"


def _check_part(part: str, what: str, raw: str, *, allow_backslash: bool, limit: int) -> None:
    if not part:
        raise InvalidName(f"{what} is empty in {raw!r}")
    if "\0" in part:
        raise InvalidName(f"{what} contains a NUL character: {raw!r}")
    if "/" in part:
        raise InvalidName(f"{what} contains '/', which names cannot hold: {raw!r}")
    if not allow_backslash and "\\" in part:
        raise InvalidName(f"{what} contains '\\', which this kind of name cannot hold: {raw!r}")
    if allow_backslash and any(not seg for seg in part.split("\\")):
        raise InvalidName(f"{what} has an empty path segment: {raw!r}")
    if len(raw) > limit:
        raise InvalidName(f"name is {len(raw)} characters long; the limit is {limit}: {raw[:40]!r}...")


def _normalize_server(server: str) -> str:
    low = server.lower()
    if low in _LOCAL_SERVERS:
        return "."
    if low == "*":
        return "*"
    try:
        if low in (socket.gethostname().lower(), socket.getfqdn().lower()):
            return "."
    except OSError:  # pragma: no cover - resolver failure: keep the name as given
        pass
    return server


def parse(raw: str, *, family: Family | None = None) -> ObjectName:
    """Parse a Win32 object name.

    Args:
        raw: the name, in any form listed in the module docstring.
        family: when given, the family the caller expects (``"pipe"`` for
            ``CreateNamedPipe``); a plain name is then taken as that family's local name
            only for kernel objects.

    Returns:
        The parsed :class:`ObjectName`.

    Raises:
        InvalidName: empty, too long, a ``/`` or NUL inside, an unknown ``\\\\server\\kind``
            prefix, or a name of another family than ``family``.
    """
    if not isinstance(raw, str):
        raise InvalidName(f"name must be a str, not {type(raw).__name__}")
    if not raw:
        raise InvalidName("name is empty")
    if raw.startswith("\\\\"):
        parts = raw[2:].split("\\", 2)
        if len(parts) < 3:
            raise InvalidName(
                f"{raw!r} is not of the form \\\\server\\pipe\\name or \\\\server\\mailslot\\name"
            )
        server, kind, rest = parts
        kind_f = kind.lower()
        if kind_f not in ("pipe", "mailslot"):
            raise InvalidName(f"unknown prefix \\\\{server}\\{kind}\\ in {raw!r}: expected pipe or mailslot")
        if not server:
            raise InvalidName(f"server part is empty in {raw!r}")
        fam: Family = "pipe" if kind_f == "pipe" else "mailslot"
        _check_part(
            rest,
            f"{fam} name",
            raw,
            allow_backslash=fam == "mailslot",
            limit=MAX_PIPE_NAME if fam == "pipe" else MAX_NAME,
        )
        norm = _normalize_server(server)
        if norm == "*" and fam != "mailslot":
            raise InvalidName(f"'*' (broadcast) is only valid for mailslots: {raw!r}")
        result = ObjectName(fam, norm, "global", rest, raw)
    else:
        scope: Scope = "local"
        rest = raw
        head, sep, tail = raw.partition("\\")
        if sep:
            low = head.lower()
            if low == "global":
                scope, rest = "global", tail
            elif low == "local":
                scope, rest = "local", tail
            else:
                raise InvalidName(f"unknown prefix {head!r}\\ in {raw!r}: expected Global\\ or Local\\")
        _check_part(rest, "object name", raw, allow_backslash=False, limit=MAX_NAME)
        result = ObjectName("kernel", ".", scope, rest, raw)
    if family is not None and result.family != family:
        raise InvalidName(f"{raw!r} is not a {family} name (it names a {result.family} object)")
    return result


def mailslot_name(raw: str) -> ObjectName:
    """Parse a mailslot name; a bare name ``x`` is taken as ``\\\\.\\mailslot\\x``."""
    if isinstance(raw, str) and raw and not raw.startswith("\\\\") and "\\" not in raw:
        raw = f"\\\\.\\mailslot\\{raw}"
    return parse(raw, family="mailslot")


def pipe_name(raw: str) -> ObjectName:
    """Parse a named-pipe name; a bare name ``x`` is taken as ``\\\\.\\pipe\\x``."""
    if isinstance(raw, str) and raw and not raw.startswith("\\\\") and "\\" not in raw:
        raw = f"\\\\.\\pipe\\{raw}"
    return parse(raw, family="pipe")
