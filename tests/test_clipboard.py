"""winipc.clipboard: real processes, Windows' semantics (see docs/clipboard.md)."""

from __future__ import annotations

import os
import signal
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from winipc import clipboard as cb
from winipc import errors as W
from winipc.clipboard import _formats as F

from conftest import child_env, run_py, wait_line

HERE = Path(__file__).resolve().parent


@pytest.fixture(autouse=True)
def no_desktop(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No desktop bridge, and a fresh per-process default clipboard handle per test."""
    monkeypatch.setenv("WINIPC_CLIPBOARD_BRIDGE", "0")
    cb._default = None
    yield
    if cb._default is not None:
        cb._default.release()
        cb._default = None


def window_child(procs: list[subprocess.Popen[str]], mode: str, *args: str) -> tuple[subprocess.Popen[str], int]:
    p = subprocess.Popen(
        [sys.executable, str(HERE / "clip_window.py"), mode, *args],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env=child_env(),
    )
    procs.append(p)
    line = wait_line(p, "READY")
    return p, int(line.split()[1])


def finish(p: subprocess.Popen[str]) -> list[str]:
    """Ask a window child to exit; its remaining output lines."""
    assert p.stdin is not None
    p.stdin.write("exit\n")
    p.stdin.flush()
    out, err = p.communicate(timeout=8)
    assert p.returncode == 0, err
    return out.splitlines()


def child(code: str) -> str:
    p = run_py(code, env=child_env())
    out, err = p.communicate(timeout=8)
    assert p.returncode == 0, err
    return out.strip()


# --------------------------------------------------------------------------- basics


def test_set_in_one_process_get_in_another() -> None:
    fmt = cb.register_format("winipc test bytes")
    child(
        f"""
        from winipc import clipboard as cb
        with cb.opened():
            cb.empty()
            cb.set_data(cb.CF_UNICODETEXT, "hello from the child \u20ac")
            cb.set_data({fmt}, b"\\x00\\x01raw")
        """
    )
    assert cb.get_text() == "hello from the child \u20ac"
    with cb.opened():
        assert cb.get_data(fmt) == b"\x00\x01raw"
        assert cb.enum_formats()[:2] == [cb.CF_UNICODETEXT, fmt]
        assert cb.get_owner() is None
    cb.set_text("back to the child")
    assert child("from winipc import clipboard as cb; print(cb.get_text())") == "back to the child"


def opener_child(procs: list[subprocess.Popen[str]]) -> subprocess.Popen[str]:
    """A child that opens the clipboard, closes it on a stdin line, and exits on the next."""
    p = subprocess.Popen(
        [sys.executable, "-c", "import sys\nfrom winipc import clipboard as cb\ncb.open()\n"
         "print('OPEN', flush=True)\nsys.stdin.readline()\ncb.close()\nprint('CLOSED', flush=True)\n"
         "sys.stdin.readline()\n"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=child_env(),
    )
    procs.append(p)
    wait_line(p, "OPEN")
    return p


def test_open_elsewhere_is_access_denied_at_once(procs: list[subprocess.Popen[str]]) -> None:
    p = opener_child(procs)
    with pytest.raises(W.AccessDenied) as ei:
        cb.open()
    assert ei.value.winerror == 5
    other = cb.Clipboard()  # another handle of this very process is refused too
    with pytest.raises(W.AccessDenied):
        other.open()
    other.release()
    p.kill()  # the kernel drops the dead opener's lock
    p.wait(5)
    cb.open()
    assert cb.get_open_window() is None
    cb.close()


def test_open_elsewhere_then_closed(procs: list[subprocess.Popen[str]]) -> None:
    p = opener_child(procs)
    with pytest.raises(W.AccessDenied):
        cb.open()
    assert p.stdin is not None
    p.stdin.write("\n")
    p.stdin.flush()
    wait_line(p, "CLOSED")
    with cb.opened():
        pass
    p.stdin.write("\n")
    p.stdin.flush()


def test_clipboard_not_open() -> None:
    for call in (
        lambda: cb.get_data(cb.CF_TEXT),
        lambda: cb.set_data(cb.CF_TEXT, b"x\0"),
        lambda: cb.empty(),
        lambda: cb.close(),
        lambda: cb.enum_formats(),
    ):
        with pytest.raises(W.ClipboardNotOpen) as ei:
            call()
        assert ei.value.winerror == 1418
    # these do not need it open, as on Windows
    assert cb.count_formats() >= 0
    assert isinstance(cb.sequence_number(), int)
    assert cb.get_open_window() is None


def test_bad_arguments() -> None:
    with cb.opened():
        with pytest.raises(W.InvalidParameter, match="fmt"):
            cb.set_data(0, b"x")
        with pytest.raises(W.InvalidParameter, match="fmt"):
            cb.get_data(0x10000)
        with pytest.raises(W.InvalidParameter, match="str"):
            cb.set_data(cb.CF_DIB, "text")
        with pytest.raises(W.InvalidParameter, match="delayed"):
            cb.set_data(cb.CF_TEXT, None)  # no owner window


def test_sequence_number_rises_on_every_change() -> None:
    s0 = cb.sequence_number()
    with cb.opened():
        assert cb.sequence_number() == s0
        cb.empty()
        s1 = cb.sequence_number()
        cb.set_data(cb.CF_TEXT, "a")
        s2 = cb.sequence_number()
        cb.set_data(cb.CF_OEMTEXT, "b")
        s3 = cb.sequence_number()
        cb.get_data(cb.CF_TEXT)
        assert cb.sequence_number() == s3
    assert s0 < s1 < s2 < s3
    child("from winipc import clipboard as cb; cb.set_text('x')")
    assert cb.sequence_number() > s3


# --------------------------------------------------------------------------- formats


def test_synthesized_text_both_ways() -> None:
    with cb.opened():
        cb.empty()
        cb.set_data(cb.CF_TEXT, b"caf\xe9 \x80\x81\0garbage")
        assert cb.enum_formats() == [cb.CF_TEXT, cb.CF_UNICODETEXT, cb.CF_LOCALE, cb.CF_OEMTEXT]
        assert cb.get_data(cb.CF_UNICODETEXT) == "caf\xe9 \u20ac\x81".encode("utf-16-le") + b"\0\0"
        assert cb.get_data(cb.CF_OEMTEXT) == b"caf\x82 ??\0"
        assert cb.get_data(cb.CF_LOCALE) == struct.pack("<I", 0x0409)

        cb.empty()
        cb.set_data(cb.CF_UNICODETEXT, "\u03a9\u2248\u0436 ok")
        assert cb.get_data(cb.CF_UNICODETEXT) == "\u03a9\u2248\u0436 ok".encode("utf-16-le") + b"\0\0"
        assert cb.get_data(cb.CF_TEXT) == b"??? ok\0"  # none of the three is in cp1252
        assert cb.get_data(cb.CF_OEMTEXT) == b"\xea\xf7? ok\0"  # Omega and approx are in cp437

        cb.empty()
        cb.set_data(cb.CF_OEMTEXT, b"\xc4\xea\0")  # box line, Omega
        assert cb.get_data(cb.CF_UNICODETEXT) == "\u2500\u03a9".encode("utf-16-le") + b"\0\0"
        assert cb.get_data(cb.CF_TEXT) == b"??\0"
        assert cb.count_formats() == 4
        assert cb.is_format_available(cb.CF_TEXT)
        assert not cb.is_format_available(cb.CF_DIB)
    assert cb.get_text() == "\u2500\u03a9"


def _dib(width: int, height: int, bpp: int = 24, compression: int = 0, masks: bytes = b"") -> bytes:
    stride = ((width * bpp + 31) // 32) * 4
    bits = bytes(range(256)) * (stride * height // 256 + 1)
    header = struct.pack("<IiiHHIIiiII", 40, width, height, 1, bpp, compression, stride * height, 0, 0, 0, 0)
    return header + masks + bits[: stride * height]


def test_bitmaps_are_synthesized() -> None:
    dib = _dib(3, 2)
    with cb.opened():
        cb.empty()
        cb.set_data(cb.CF_DIB, dib)
        assert cb.enum_formats() == [cb.CF_DIB, cb.CF_BITMAP, cb.CF_DIBV5]
        assert cb.get_data(cb.CF_BITMAP) == dib  # an HBITMAP on Windows; DIB bytes here
        v5 = cb.get_data(cb.CF_DIBV5)
        assert v5 is not None and struct.unpack_from("<I", v5)[0] == 124
        assert v5[124:] == dib[40:]
        cb.empty()
        cb.set_data(cb.CF_DIBV5, v5)
        assert cb.get_data(cb.CF_DIB) == dib
        # 32-bit BI_BITFIELDS: the masks live in the V5 header and after the DIB's header
        masks = struct.pack("<3I", 0xFF0000, 0xFF00, 0xFF)
        d32 = _dib(2, 2, 32, F.BI_BITFIELDS, masks)
        cb.empty()
        cb.set_data(cb.CF_DIB, d32)
        v5b = cb.get_data(cb.CF_DIBV5)
        assert v5b is not None and struct.unpack_from("<3I", v5b, 40) == (0xFF0000, 0xFF00, 0xFF)
        cb.empty()
        cb.set_data(cb.CF_DIBV5, v5b)
        assert cb.get_data(cb.CF_DIB) == d32
        cb.empty()
        cb.set_data(cb.CF_DIB, b"short")
        assert cb.get_data(cb.CF_DIBV5) is None  # malformed: nothing to synthesize from


def test_register_format_agrees_across_processes() -> None:
    mine = cb.register_format("Winipc Test Format")
    assert 0xC000 <= mine <= 0xFFFF
    out = child(
        """
        from winipc import clipboard as cb
        from winipc._core import atoms
        print(cb.register_format("WINIPC TEST FORMAT"), atoms.add("winipc test format"))
        """
    )
    assert out.split() == [str(mine), str(mine)]
    assert cb.get_format_name(mine) == "Winipc Test Format"
    with pytest.raises(W.InvalidParameter, match="predefined"):
        cb.get_format_name(cb.CF_TEXT)
    with pytest.raises(W.InvalidParameter):
        cb.register_format("")


def test_register_format_equals_register_window_message() -> None:
    m = pytest.importorskip("winipc.messages")
    assert cb.register_format("Winipc Shared Atom") == m.register_window_message("winipc shared atom")


# --------------------------------------------------------------------------- CF_HDROP, HTML

paths = st.lists(
    st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\0"), min_size=1, max_size=40),
    max_size=8,
)


@settings(max_examples=60, deadline=None)
@given(paths, st.integers(-(2**31), 2**31 - 1), st.integers(-(2**31), 2**31 - 1))
def test_hdrop_round_trip(names: list[str], x: int, y: int) -> None:
    blob = cb.encode_hdrop(names, point=(x, y))
    assert struct.unpack_from("<IiiII", blob) == (20, x, y, 0, 1)
    assert blob.endswith(b"\0\0\0\0") or not names
    assert cb.decode_hdrop(blob) == names


def test_hdrop_ansi_and_errors() -> None:
    ansi = struct.pack("<IiiII", 20, 5, 6, 0, 0) + b"C:\\caf\xe9.txt\0D:\\b\0\0"
    assert cb.decode_hdrop(ansi) == ["C:\\caf\xe9.txt", "D:\\b"]
    with pytest.raises(W.InvalidData):
        cb.decode_hdrop(b"\x14\0\0")
    with pytest.raises(W.InvalidData):
        cb.decode_hdrop(struct.pack("<IiiII", 20, 0, 0, 0, 1) + "a".encode("utf-16-le"))
    with pytest.raises(W.InvalidParameter):
        cb.encode_hdrop(["a\0b"])
    blob = cb.encode_hdrop(["/tmp/a b", "/tmp/\u00e9"])
    with cb.opened():
        cb.empty()
        cb.set_data(cb.CF_HDROP, blob)
    assert child(
        "from winipc import clipboard as cb\nwith cb.opened(): print(cb.decode_hdrop(cb.get_data(cb.CF_HDROP)))"
    ) == str(["/tmp/a b", "/tmp/\u00e9"])


@settings(max_examples=60, deadline=None)
@given(st.text(st.characters(blacklist_categories=("Cs",)), max_size=200))
def test_html_round_trip(fragment: str) -> None:
    blob = cb.encode_html(fragment, source_url="https://example.com/x")
    assert blob.startswith(b"Version:0.9\r\nStartHTML:")
    head = dict(
        line.split(":", 1) for line in blob.split(b"<html>")[0].decode().splitlines() if line
    )
    sh, eh, sf, ef = (int(head[k]) for k in ("StartHTML", "EndHTML", "StartFragment", "EndFragment"))
    assert all(len(head[k]) == 10 for k in ("StartHTML", "EndHTML", "StartFragment", "EndFragment"))
    assert blob[sh:].startswith(b"<html>") and eh == len(blob)
    assert blob[sf:ef] == fragment.encode()
    assert blob[:sf].endswith(b"<!--StartFragment-->") and blob[ef:].startswith(b"<!--EndFragment-->")
    assert cb.decode_html(blob + b"\0") == fragment


def test_html_errors() -> None:
    with pytest.raises(W.InvalidData):
        cb.decode_html(b"<html>no header</html>")
    with pytest.raises(W.InvalidData):
        cb.decode_html(b"Version:0.9\r\nStartFragment:0000000050\r\nEndFragment:0000009999\r\n")


# --------------------------------------------------------------------------- windows

def _msgs() -> Any:
    return pytest.importorskip("winipc.messages")


def test_delayed_rendering_across_processes(procs: list[subprocess.Popen[str]]) -> None:
    _msgs()
    fmt = cb.register_format("winipc delayed test")
    p, hwnd = window_child(procs, "delayed", "winipc delayed test")
    assert cb.get_owner() == hwnd
    with cb.opened():
        assert cb.enum_formats()[:2] == [cb.CF_UNICODETEXT, fmt]
        seq = cb.sequence_number()
        assert cb.get_data(cb.CF_UNICODETEXT) == "rendered 13".encode("utf-16-le") + b"\0\0"
        assert cb.get_data(cb.CF_TEXT) == b"rendered 13\0"  # from the rendered text, no new request
        assert cb.sequence_number() == seq
    out = finish(p)  # normal exit: the destroy sends WM_RENDERALLFORMATS, which renders the rest
    assert out.count("RENDERFORMAT 13") == 1
    assert "RENDERALLFORMATS" in out
    with cb.opened():
        assert cb.get_data(fmt) == f"all {fmt}".encode()
        assert cb.get_data(cb.CF_UNICODETEXT) == "all 13".encode("utf-16-le") + b"\0\0"
        assert cb.get_owner() is None


def test_delayed_rendering_owner_killed(procs: list[subprocess.Popen[str]]) -> None:
    _msgs()
    fmt = cb.register_format("winipc delayed kill")
    p, _hwnd = window_child(procs, "delayed", "winipc delayed kill")
    os.kill(p.pid, signal.SIGKILL)
    p.wait(5)
    with cb.opened():
        assert cb.get_data(fmt) is None
        assert cb.get_data(cb.CF_UNICODETEXT) is None
        assert cb.enum_formats() == []
    assert cb.get_owner() is None


def test_delayed_formats_left_unrendered_disappear(procs: list[subprocess.Popen[str]]) -> None:
    _msgs()
    p, _hwnd = window_child(procs, "norender")
    with cb.opened():
        assert cb.get_data(cb.CF_UNICODETEXT) is None  # the owner ignored WM_RENDERFORMAT
    out = finish(p)
    assert "RENDERFORMAT 13" in out and "RENDERALLFORMATS" in out
    with cb.opened():
        assert cb.get_data(cb.CF_UNICODETEXT) == "all 13".encode("utf-16-le") + b"\0\0"


def test_destroyclipboard_goes_to_previous_owner(procs: list[subprocess.Popen[str]]) -> None:
    _msgs()
    p, hwnd = window_child(procs, "plain")
    assert cb.get_owner() == hwnd
    assert cb.get_text() == "from child"
    with cb.opened():
        cb.empty()
        assert cb.get_owner() is None  # opened without a window, as Windows
    out = finish(p)
    assert out.count("DESTROYCLIPBOARD") == 1


def test_listeners_fire_once_per_change(procs: list[subprocess.Popen[str]]) -> None:
    _msgs()
    p, hwnd = window_child(procs, "listener")
    seqs = []
    for i in range(3):
        with cb.opened():
            cb.empty()
            cb.set_data(cb.CF_TEXT, f"change {i}")
            cb.set_data(cb.CF_OEMTEXT, f"change {i}")
        seqs.append(cb.sequence_number())
        wait_line(p, "CLIPBOARDUPDATE")
    with cb.opened():  # no change: no message
        cb.get_data(cb.CF_TEXT)
    time.sleep(0.3)
    out = finish(p)
    assert [line for line in out if line.startswith("CLIPBOARDUPDATE")] == []
    # a listener that died is dropped at the next notification
    with cb.opened():
        cb.empty()
    assert hwnd not in cb.default()._current().listeners


def test_listener_sees_changes_from_another_process(procs: list[subprocess.Popen[str]]) -> None:
    _msgs()
    p, hwnd = window_child(procs, "listener")
    child("from winipc import clipboard as cb; cb.set_text('one')")
    first = wait_line(p, "CLIPBOARDUPDATE")
    child("from winipc import clipboard as cb; cb.set_text('two')")
    second = wait_line(p, "CLIPBOARDUPDATE")
    assert int(first.split()[1]) < int(second.split()[1])
    cb.remove_format_listener(hwnd)
    cb.set_text("three")
    time.sleep(0.3)
    out = finish(p)
    assert not [line for line in out if line.startswith("CLIPBOARDUPDATE")]
    with pytest.raises(W.InvalidParameter):
        cb.remove_format_listener(hwnd)


def test_open_with_window_and_open_window() -> None:
    m = _msgs()
    m.register_class("WinipcClipLocal")
    w = m.create_window("WinipcClipLocal", parent=m.HWND_MESSAGE)
    try:
        with cb.opened(w):
            assert cb.get_open_window() == w.hwnd
            cb.empty()
            cb.set_data(cb.CF_TEXT, "mine")
        assert cb.get_owner() == w.hwnd
        assert cb.get_open_window() is None
    finally:
        w.destroy()
        m.unregister_class("WinipcClipLocal")
    assert cb.get_owner() is None  # the owner window is gone
    assert cb.get_text() == "mine"


def test_default_clipboard_follows_a_moved_root(
    winipc_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The process's default handle is remade in the user's root of the moment."""
    monkeypatch.setenv("WINIPC_CLIPBOARD_BRIDGE", "0")
    monkeypatch.setattr(cb, "_default", None)
    cb.set_text("first root")
    other = tmp_path / "other-root"
    other.mkdir(mode=0o700)
    monkeypatch.setenv("WINIPC_ROOT", str(other))
    with cb.opened():
        assert cb.get_text() is None
    monkeypatch.setenv("WINIPC_ROOT", str(winipc_root))
    with cb.opened():
        assert cb.get_text() == "first root"
    cb.default().release()
