"""The machine-wide atom table of registered strings (Win32: GlobalAddAtom's table).

RegisterWindowMessage and RegisterClipboardFormat share it, as on Windows: the same
string, compared case-insensitively, gives the same id (0xC000..0xFFFF) in every process
of the machine, and two different strings never share an id. Atoms are never deleted (as
registered messages and formats live until the session ends on Windows).

Layout: ``<global root>/atoms/`` (sticky, 1777, so everyone can add and nobody can remove
another user's entry), one file per atom named by its id in hex (``c0a3``) holding the
string in UTF-8, mode 0644. A string's first candidate id is a hash of its lowercased form;
a taken candidate holding another string sends the search to the next id (open
addressing). A file is written under a private temporary name and published with
``link()``, which fails when the id is taken, so a reader never sees a half-written atom
and two processes registering one string at once agree on its id.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import zlib

from winipc import errors as W
from winipc._core import roots

MIN_ATOM = 0xC000
MAX_ATOM = 0xFFFF
MAX_NAME = 255  # characters, as Windows' atom names
_SPAN = MAX_ATOM - MIN_ATOM + 1
_DIR = "atoms"


def _folder() -> str:
    path = os.path.join(roots.global_root(), _DIR)
    try:
        os.mkdir(path, 0o1777)
        os.chmod(path, 0o1777)  # whatever the umask
    except FileExistsError:
        pass
    if os.path.islink(path) or not os.path.isdir(path):
        raise W.AccessDenied(f"{path}: the atom table is not a directory")
    return path


def _check(name: str) -> str:
    if not isinstance(name, str):
        raise W.InvalidParameter(f"name: a str, not {type(name).__name__}")
    if not 1 <= len(name) <= MAX_NAME:
        raise W.InvalidParameter(f"name: 1 to {MAX_NAME} characters, not {len(name)}")
    if "\0" in name:
        raise W.InvalidParameter("name: contains NUL")
    return name


def _read(folder: str, atom: int) -> str | None:
    try:
        with open(os.path.join(folder, f"{atom:04x}"), "rb") as f:
            raw = f.read(4 * MAX_NAME + 1)
    except FileNotFoundError:
        return None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return ""  # a damaged entry: taken, matches nothing


def _candidates(name: str) -> list[int]:
    start = zlib.crc32(name.casefold().encode("utf-8")) % _SPAN
    return [MIN_ATOM + (start + i) % _SPAN for i in range(_SPAN)]


def _publish(folder: str, atom: int, name: str) -> bool:
    tmp = os.path.join(folder, f".tmp.{os.getpid()}.{secrets.token_hex(6)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
    try:
        os.fchmod(fd, 0o644)
        os.write(fd, name.encode("utf-8"))
    finally:
        os.close(fd)
    try:
        os.link(tmp, os.path.join(folder, f"{atom:04x}"))
        return True
    except FileExistsError:
        return False
    finally:
        with contextlib.suppress(OSError):
            os.unlink(tmp)


def find(name: str) -> int | None:
    """The atom of ``name`` (case-insensitive), or None when it was never added
    (Win32: GlobalFindAtom).

    Raises:
        InvalidParameter: ``name`` is empty, longer than 255 characters or not a str.
    """
    key = _check(name).casefold()
    folder = _folder()
    for atom in _candidates(name):
        held = _read(folder, atom)
        if held is None:
            return None
        if held.casefold() == key:
            return atom
    return None


def add(name: str) -> int:
    """The atom of ``name``, added when new: 0xC000..0xFFFF, the same in every process
    (Win32: GlobalAddAtom; RegisterWindowMessage, RegisterClipboardFormat).

    Raises:
        InvalidParameter: ``name`` is empty, longer than 255 characters or not a str.
        WinIPCError: winerror 8 (ERROR_NOT_ENOUGH_MEMORY), all 16,384 atoms are taken.
    """
    key = _check(name).casefold()
    folder = _folder()
    for atom in _candidates(name):
        while True:
            held = _read(folder, atom)
            if held is not None:
                break
            if _publish(folder, atom, name):
                return atom
            # another process published this id meanwhile: read what it holds
        if held.casefold() == key:
            return atom
    raise W.from_winerror(8, f"the atom table is full ({_SPAN} atoms)", "GlobalAddAtom")


def name_of(atom: int) -> str:
    """The string of a registered atom, as first spelled (Win32: GlobalGetAtomName).

    Raises:
        InvalidParameter: ``atom`` is outside 0xC000..0xFFFF or was never added.
    """
    if isinstance(atom, bool) or not isinstance(atom, int) or not MIN_ATOM <= atom <= MAX_ATOM:
        raise W.InvalidParameter(f"atom: {MIN_ATOM:#x}..{MAX_ATOM:#x}, not {atom!r}")
    held = _read(_folder(), atom)
    if not held:
        raise W.InvalidParameter(f"atom {atom:#x} is not in the atom table")
    return held
