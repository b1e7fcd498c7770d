"""pywin32's ``pywintypes`` over winipc: error, HANDLE, SECURITY_ATTRIBUTES, OVERLAPPED.

After :func:`winipc.win32.install` this module is importable as ``pywintypes``.

- ``error(winerror, funcname, strerror)``: every failure of the face; ``args`` is that
  triple, and ``win32pipe.error``, ``win32file.error``, ``win32api.error`` and
  ``win32event.error`` are this class.
- ``HANDLE`` / ``PyHANDLE``: ``Close()``, ``close()``, ``Detach()``, ``int(h)``,
  ``h.handle``; a closed one gives ERROR_INVALID_HANDLE (6) when used.
- ``SECURITY_ATTRIBUTES``: ``bInheritHandle``, and ``winipc_security`` to carry a
  :class:`winipc.SecurityAttributes` (who may open the object).
- ``OVERLAPPED``: ``hEvent``, ``Internal``, ``InternalHigh``, ``Offset``,
  ``OffsetHigh``, ``object``, ``dword``.
"""

from __future__ import annotations

from typing import Any

from winipc._core.security import SecurityAttributes
from winipc.errors import ERROR_NOT_SUPPORTED
from winipc.win32._handles import PyHANDLE
from winipc.win32._overlapped import OVERLAPPED
from winipc.win32._support import api_error, com_error, error

HANDLE = PyHANDLE
HANDLEType = PyHANDLE
OVERLAPPEDType = OVERLAPPED

#: what a NULL DACL means on Windows: everyone may do everything
_NULL_DACL = SecurityAttributes(allow={"everyone": "rwcq"})


class SECURITY_ATTRIBUTES:
    """pywin32's PySECURITY_ATTRIBUTES (Win32: SECURITY_ATTRIBUTES).

    Args:
        winipc_security: winipc's extension: the :class:`winipc.SecurityAttributes`
            the object is created with (allow / deny lists). Without it the object is
            its owner's only, winipc's secure default.

    Attributes:
        bInheritHandle: the handle is inheritable (pywin32's default is 1, as here).
            Honoured by CreatePipe; named-pipe handles reach children through
            ``winipc.spawn(inherit=[h.object])`` instead.
        winipc_security: see above; None means owner only.
    """

    def __init__(self, winipc_security: SecurityAttributes | None = None) -> None:
        self.bInheritHandle = 1
        self.winipc_security = winipc_security

    def Initialize(self) -> None:
        """Reset the security descriptor (to winipc's owner-only default)."""
        self.winipc_security = None

    def SetSecurityDescriptorDacl(self, bPresent: Any, pDacl: Any, bDaclDefaulted: Any) -> None:
        """Set the DACL; only the two forms scripts use with pipes are understood.

        ``SetSecurityDescriptorDacl(1, None, 0)`` is a NULL DACL: Windows lets everyone
        in, and so does winipc (every user may connect, read and write). ``bPresent``
        false means no DACL given: winipc's owner-only default.

        Raises:
            pywintypes.error: (50 ERROR_NOT_SUPPORTED) a real ACL object: Windows ACLs are
                not translated; set ``winipc_security`` instead.
        """
        if not bPresent:
            self.winipc_security = None
        elif pDacl is None:
            self.winipc_security = _NULL_DACL
        else:
            raise api_error(
                ERROR_NOT_SUPPORTED,
                "SetSecurityDescriptorDacl",
                "Windows ACLs are not translated; set sa.winipc_security to a "
                "winipc.SecurityAttributes instead",
            )

    def __repr__(self) -> str:
        return (
            f"<PySECURITY_ATTRIBUTES bInheritHandle={self.bInheritHandle} "
            f"winipc_security={self.winipc_security!r}>"
        )


SECURITY_ATTRIBUTESType = SECURITY_ATTRIBUTES


def security_of(sa: Any) -> tuple[SecurityAttributes | None, bool]:
    """(winipc security, inherit) from a pywin32 ``sa`` argument (None allowed).

    Raises:
        TypeError: not a SECURITY_ATTRIBUTES or None (pywin32's message).
    """
    if sa is None:
        return None, False
    if not isinstance(sa, SECURITY_ATTRIBUTES):
        raise TypeError("The object is not a PySECURITY_ATTRIBUTES object")
    return sa.winipc_security, bool(sa.bInheritHandle)


__all__ = [
    "HANDLE",
    "OVERLAPPED",
    "SECURITY_ATTRIBUTES",
    "HANDLEType",
    "OVERLAPPEDType",
    "PyHANDLE",
    "SECURITY_ATTRIBUTESType",
    "com_error",
    "error",
]
