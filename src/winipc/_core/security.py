"""Security attributes: who may open an object, and the check a server makes on a peer.

Secure by default (DESIGN.md section 6): an object without attributes is its owner's
only (0600 files, 0700 directories whatever the umask). ``SecurityAttributes(allow=...,
deny=...)`` opens it to named users and groups with given rights. File modes are opened
just enough for the allowed principals to reach the object; for socket-based objects the
server then checks the connecting peer's credentials against the lists before it reads a
byte of payload, so the lists, not the file modes, are what decides.

Principals are written ``"user:NAME"``, ``"group:NAME"``, ``"uid:N"``, ``"gid:N"``,
``"everyone"`` (or ``"*"``); a bare ``"NAME"`` is a user.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from winipc._backends import os_backend as B
from winipc.errors import InvalidParameter


class Access(enum.IntFlag):
    """Rights an entry grants or denies."""

    READ = 1
    WRITE = 2
    CONNECT = 4
    QUERY = 8
    ALL = READ | WRITE | CONNECT | QUERY


_RIGHT_LETTERS = {"r": Access.READ, "w": Access.WRITE, "c": Access.CONNECT, "q": Access.QUERY}


def _parse_rights(value: Access | int | str) -> Access:
    if isinstance(value, str):
        rights = Access(0)
        for letter in value.lower():
            if letter not in _RIGHT_LETTERS:
                raise InvalidParameter(
                    f"rights {value!r}: unknown letter {letter!r} (use r, w, c, q or Access flags)"
                )
            rights |= _RIGHT_LETTERS[letter]
        return rights
    if isinstance(value, int):
        if value & ~int(Access.ALL):
            raise InvalidParameter(f"rights {value!r}: bits outside Access.ALL")
        return Access(value)
    raise InvalidParameter(f"rights must be Access flags or a string like 'rw', not {value!r}")


@dataclass(frozen=True)
class Ace:
    """One entry: a principal (``kind`` is ``"uid"``, ``"gid"`` or ``"everyone"``) and rights."""

    kind: str
    ident: int
    rights: Access

    @classmethod
    def parse(cls, principal: str, rights: Access | int | str) -> Ace:
        if not isinstance(principal, str) or not principal:
            raise InvalidParameter(f"principal must be a non-empty string, not {principal!r}")
        r = _parse_rights(rights)
        head, sep, tail = principal.partition(":")
        if principal in ("everyone", "*"):
            return cls("everyone", -1, r)
        if not sep:
            return cls("uid", B.lookup_user(principal), r)
        if head == "user":
            return cls("uid", B.lookup_user(tail), r)
        if head == "group":
            return cls("gid", B.lookup_group(tail), r)
        if head in ("uid", "gid"):
            try:
                return cls(head, int(tail), r)
            except ValueError:
                raise InvalidParameter(f"principal {principal!r}: {head} must be a number") from None
        raise InvalidParameter(
            f"principal {principal!r}: expected user:NAME, group:NAME, uid:N, gid:N or everyone"
        )

    def matches(self, uid: int, gids: frozenset[int]) -> bool:
        if self.kind == "everyone":
            return True
        if self.kind == "uid":
            return uid == self.ident
        return self.ident in gids

    def to_record(self) -> list[Any]:
        return [self.kind, self.ident, int(self.rights)]

    @classmethod
    def from_record(cls, rec: Any) -> Ace:
        if not (isinstance(rec, list) and len(rec) == 3 and rec[0] in ("uid", "gid", "everyone")):
            raise InvalidParameter(f"malformed access entry {rec!r}")
        return cls(str(rec[0]), int(rec[1]), _parse_rights(int(rec[2])))


EntryList = Mapping[str, Access | int | str] | Iterable[tuple[str, Access | int | str]]


def _entries(spec: EntryList | None) -> tuple[Ace, ...]:
    if spec is None:
        return ()
    items = spec.items() if isinstance(spec, Mapping) else spec
    out = []
    for item in items:
        try:
            principal, rights = item
        except (TypeError, ValueError):
            raise InvalidParameter(
                f"access entry {item!r} must be a (principal, rights) pair"
            ) from None
        out.append(Ace.parse(principal, rights))
    return tuple(out)


@dataclass(frozen=True)
class SecurityAttributes:
    """Who may use an object (Win32: SECURITY_ATTRIBUTES with a DACL).

    Args:
        allow: principals and the rights they get, as a mapping or (principal, rights)
            pairs; rights are :class:`Access` flags or letters ``"rwcq"``.
        deny: principals refused those rights; deny wins over allow, also for the owner.
        inherit_handle: the handle created with these attributes is inherited by children
            started with :func:`winipc.spawn` (``bInheritHandle``).

    The owner (the creating user) has every right unless denied.
    """

    allow: tuple[Ace, ...] = field(default=())
    deny: tuple[Ace, ...] = field(default=())
    inherit_handle: bool = False

    def __init__(
        self,
        allow: EntryList | None = None,
        deny: EntryList | None = None,
        inherit_handle: bool = False,
    ) -> None:
        object.__setattr__(self, "allow", _entries(allow))
        object.__setattr__(self, "deny", _entries(deny))
        object.__setattr__(self, "inherit_handle", bool(inherit_handle))

    @property
    def opens_to_others(self) -> bool:
        """True when some principal other than the owner may be granted a right."""
        me = B.uid()
        return any(not (a.kind == "uid" and a.ident == me) for a in self.allow)

    def file_mode(
        self, *, directory: bool = False, socket_file: bool = False, holders: bool = False
    ) -> int:
        """The file mode that lets allowed principals reach the object (checks do the rest).

        ``holders`` is the lock-only file each handle locks a byte of: it holds no data,
        so opening it to allowed principals gives them nothing but a handle count.
        """
        if not self.opens_to_others:
            return 0o700 if directory else 0o600
        if directory:
            return 0o755
        return 0o666 if socket_file or holders else 0o644

    def check(self, owner: int, uid: int, gid: int, wanted: Access) -> bool:
        """True when a peer (uid, primary gid) has every right in ``wanted``."""
        gids = B.groups_of(uid, gid)
        for ace in self.deny:
            if ace.matches(uid, gids) and ace.rights & wanted:
                return False
        if uid == owner:
            return True
        granted = Access(0)
        for ace in self.allow:
            if ace.matches(uid, gids):
                granted |= ace.rights
        return (granted & wanted) == wanted

    def to_record(self) -> dict[str, Any]:
        return {
            "allow": [a.to_record() for a in self.allow],
            "deny": [a.to_record() for a in self.deny],
        }

    @classmethod
    def from_record(cls, rec: Any) -> SecurityAttributes:
        if not isinstance(rec, dict):
            raise InvalidParameter("malformed security record")
        obj = cls()
        object.__setattr__(obj, "allow", tuple(Ace.from_record(r) for r in rec.get("allow", [])))
        object.__setattr__(obj, "deny", tuple(Ace.from_record(r) for r in rec.get("deny", [])))
        return obj


OWNER_ONLY = SecurityAttributes()
