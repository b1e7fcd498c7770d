"""Hook points between the default clipboard and the desktop's clipboard (``_bridge``).

Only the per-user default clipboard talks to the desktop. The bridge is found lazily,
once per process, through ``winipc.clipboard._bridge.detect()``; when that module is
missing, ``detect()`` returns None or fails, or ``WINIPC_CLIPBOARD_BRIDGE=0``, the
clipboard works alone and these functions do nothing. A failing bridge never fails a
clipboard call.

* :func:`pull` (on ``open()``): content another desktop program placed since our last
  push/pull becomes the clipboard's new content: ``text/plain;charset=utf-8`` as
  CF_UNICODETEXT, ``image/png`` as the registered format ``"PNG"`` plus CF_DIB (through
  ``_bridge.png_to_dib`` when it can).
* :func:`push` (on ``close()`` after a change by this handle): CF_UNICODETEXT (or text
  synthesized from CF_TEXT / CF_OEMTEXT) as ``text/plain;charset=utf-8``; ``"PNG"``, else
  CF_DIB / CF_DIBV5 through ``_bridge.dib_to_png``, as ``image/png``. Delayed formats
  are not rendered for the desktop.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping
from typing import Any

from winipc.clipboard import _formats as F

TEXT_MIME = "text/plain;charset=utf-8"
PNG_MIME = "image/png"
PNG_FORMAT_NAME = "PNG"

_lock = threading.Lock()
_state: dict[str, Any] = {"detected": False, "bridge": None, "pid": None}


def _bridge_module() -> Any:
    from winipc.clipboard import _bridge  # type: ignore[attr-defined, unused-ignore]

    return _bridge


def bridge() -> Any:
    """The desktop bridge of this process, or None (detected on first use)."""
    if os.environ.get("WINIPC_CLIPBOARD_BRIDGE", "").strip() == "0":
        return None
    with _lock:
        if not _state["detected"] or _state["pid"] != os.getpid():
            _state["detected"], _state["pid"], _state["bridge"] = True, os.getpid(), None
            try:
                _state["bridge"] = _bridge_module().detect()
            except Exception:
                _state["bridge"] = None
        return _state["bridge"]


def _png_format() -> int:
    from winipc._core import atoms

    return atoms.add(PNG_FORMAT_NAME)


def pull(current: Mapping[int, bytes] | None = None) -> list[tuple[int, bytes]]:
    """The desktop's new content as (format, bytes), in clipboard order; [] when unchanged.

    ``current`` (format -> bytes) is the clipboard's content: a desktop holding what
    :func:`push` would give it from there (another winipc process pushed it, so this
    process's bridge has not seen it yet) is no change, and importing it would lose the
    formats the desktop does not carry.
    """
    b = bridge()
    if b is None:
        return []
    try:
        items = b.pull()
    except Exception:
        return []
    if not items:
        return []
    if current is not None:
        ours = offer(current)
        if all(ours.get(mime) == bytes(data) for mime, data in items.items()):
            return []
    out: list[tuple[int, bytes]] = []
    text = items.get(TEXT_MIME)
    if text is not None:
        s = bytes(text).decode("utf-8", errors="replace")
        out.append((F.CF_UNICODETEXT, F.encode_text(F.CF_UNICODETEXT, s)))
    png = items.get(PNG_MIME)
    if png is not None:
        out.append((_png_format(), bytes(png)))
        try:
            dib = _bridge_module().png_to_dib(bytes(png))
        except Exception:
            dib = None
        if dib:
            out.append((F.CF_DIB, bytes(dib)))
    return out


def push(have: Mapping[int, bytes]) -> None:
    """Give the desktop the text and image among ``have`` (format -> bytes)."""
    b = bridge()
    if b is None:
        return
    items = offer(have)
    if not items:
        return
    try:
        b.push(items)
    except Exception:
        pass


def offer(have: Mapping[int, bytes]) -> dict[str, bytes]:
    """What the desktop is given for the clipboard content ``have``: mime type -> bytes."""
    items: dict[str, bytes] = {}
    for fmt in F.TEXT_FORMATS:
        if fmt in have:
            items[TEXT_MIME] = F.decode_text(fmt, have[fmt]).encode("utf-8", errors="replace")
            break
    try:
        png_fmt = _png_format()
        if png_fmt in have:
            items[PNG_MIME] = have[png_fmt]
        else:
            for fmt in (F.CF_DIB, F.CF_DIBV5, F.CF_BITMAP):
                if fmt in have:
                    png = _bridge_module().dib_to_png(F.dib_from_v5(have[fmt]))
                    if png:
                        items[PNG_MIME] = bytes(png)
                    break
    except Exception:
        pass
    return items
