"""The desktop clipboard bridge (winipc.clipboard._bridge) and the CF_DIB <-> PNG conversion.

X11 tests run a real Xvfb (one per test, on a display number it picks itself with
-displayfd) and use xclip as the other desktop program. They skip when Xvfb or xclip is
missing, and fail instead under WINIPC_REQUIRE_ALL=1 (CI: apt-get install xvfb xclip xsel).
Wayland and macOS are exercised through stand-in wl-copy/wl-paste and pbcopy/pbpaste
scripts (their real tools need a compositor or a Mac). Every process a test starts on its
display is killed at teardown, with the Xvfb.
"""

from __future__ import annotations

import io
import logging
import os
import select
import shutil
import signal
import stat
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from winipc import errors as W
from winipc.clipboard import _bridge as B

REQUIRE = bool(os.environ.get("WINIPC_REQUIRE_ALL"))
try:
    from PIL import Image
except ImportError:
    if REQUIRE:
        raise
    pytest.skip("Pillow is not installed (pip install 'winipc[desktop]')", allow_module_level=True)


def _need(*tools: str) -> None:
    missing = [t for t in tools if shutil.which(t) is None]
    if missing:
        reason = f"{', '.join(missing)} not installed (apt-get install xvfb xclip xsel)"
        if REQUIRE:
            pytest.fail(f"{reason} (required: WINIPC_REQUIRE_ALL=1)")
        pytest.skip(reason)


def _alive(pid: int) -> bool:
    """Whether ``pid`` exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except OSError:
        return False


def _wait_gone(pid: int, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _alive(pid):
            return True
        time.sleep(0.02)
    return False


def _pids_with_env(var: str, value: str) -> list[int]:
    """Our processes whose environment has ``var=value`` (the tools we started for a display)."""
    want = f"{var}={value}".encode()
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as f:
                if want in f.read().split(b"\0"):
                    out.append(int(entry))
        except OSError:
            continue
    return out


def _kill_all(pids: list[int]) -> None:
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        except PermissionError:
            continue


@pytest.fixture
def xserver(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, str]]:
    """A fresh Xvfb; yields the environment to reach it (DISPLAY set for this test only)."""
    _need("Xvfb", "xclip")
    if not os.path.isdir("/proc"):
        pytest.skip("the X11 tests find the processes they leave through /proc")
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("DISPLAY", "WAYLAND_DISPLAY", "XAUTHORITY", "WINIPC_CLIPBOARD_BRIDGE")
    }
    rfd, wfd = os.pipe()
    log = tempfile.TemporaryFile()  # noqa: SIM115 (closed at teardown)
    xvfb = subprocess.Popen(
        ["Xvfb", "-displayfd", str(wfd), "-nolisten", "tcp", "-noreset", "-screen", "0", "320x240x24"],
        pass_fds=(wfd,),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=log,
        env=env,
        start_new_session=True,
    )
    os.close(wfd)
    display = ""
    try:
        number = b""
        deadline = time.monotonic() + 30
        while not number.endswith(b"\n") and time.monotonic() < deadline:
            ready, _, _ = select.select([rfd], [], [], max(0.0, deadline - time.monotonic()))
            if not ready:
                break
            chunk = os.read(rfd, 16)
            if not chunk:
                break
            number += chunk
        if not number.strip().isdigit():
            log.seek(0)
            pytest.fail(f"Xvfb did not start: {log.read().decode(errors='replace')[-2000:]}")
        display = f":{int(number)}"
        env["DISPLAY"] = display
        monkeypatch.setenv("DISPLAY", display)
        monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
        monkeypatch.delenv("WINIPC_CLIPBOARD_BRIDGE", raising=False)
        yield env
    finally:
        os.close(rfd)
        left = _pids_with_env("DISPLAY", display) if display else []
        _kill_all(left)
        xvfb.terminate()
        try:
            xvfb.wait(10)
        except subprocess.TimeoutExpired:
            xvfb.kill()
            xvfb.wait()
        log.close()
        assert all(_wait_gone(p) for p in left)


def xget(env: dict[str, str], target: str | None = None) -> bytes | None:
    """What another program pasting from the CLIPBOARD selection gets (None: nothing)."""
    args = ["xclip", "-o", "-selection", "clipboard"] + (["-t", target] if target else [])
    r = subprocess.run(args, env=env, capture_output=True, timeout=10)
    return r.stdout if r.returncode == 0 else None


def xset(env: dict[str, str], data: bytes, target: str | None = None) -> None:
    """Another program copies ``data`` (xclip forks a server that owns the selection)."""
    args = ["xclip", "-i", "-selection", "clipboard"] + (["-t", target] if target else [])
    with tempfile.TemporaryFile() as err:  # not a pipe: the forked server keeps it open
        r = subprocess.run(args, env=env, input=data, stdout=subprocess.DEVNULL, stderr=err, timeout=10)
        err.seek(0)
        assert r.returncode == 0, f"xclip -i failed: {err.read().decode(errors='replace')}"
    deadline = time.monotonic() + 10
    while xget(env, target) != data:
        assert time.monotonic() < deadline, "the other program's copy never showed"
        time.sleep(0.02)


def targets(env: dict[str, str]) -> list[str]:
    out = xget(env, "TARGETS")
    return [] if out is None else out.decode().split()


def png_of(mode: str, size: tuple[int, int], pixels: bytes) -> bytes:
    buf = io.BytesIO()
    Image.frombytes(mode, size, pixels).save(buf, "PNG")
    return buf.getvalue()


def decode(png: bytes) -> tuple[str, tuple[int, int], bytes]:
    assert png.startswith(B.PNG_SIGNATURE)
    img = Image.open(io.BytesIO(png))
    img.load()
    return img.mode, img.size, img.tobytes()


def _script(folder: Path, name: str, body: str) -> str:
    path = folder / name
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return str(path)


# --------------------------------------------------------------------------- detect


def test_detect_none_without_a_desktop_or_when_disabled(
    xserver: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    path = os.environ.get("PATH", os.defpath)
    if sys.platform != "darwin":
        assert B.detect({"PATH": path}) is None
    bridge = B.detect(xserver)
    assert isinstance(bridge, B.XclipBridge) and bridge.name == "x11-xclip"
    bridge.close()
    for off in ("0", "off"):
        assert B.detect(dict(xserver, WINIPC_CLIPBOARD_BRIDGE=off)) is None
    # a display that does not answer: None, quietly (debug log)
    unused = next(n for n in range(4000, 5000) if not os.path.exists(f"/tmp/.X11-unix/X{n}"))
    with caplog.at_level(logging.DEBUG, logger="winipc.clipboard"):
        assert B.detect(dict(xserver, DISPLAY=f":{unused}")) is None
    assert any("display" in r.getMessage().lower() for r in caplog.records)
    assert not [r for r in caplog.records if r.levelno > logging.DEBUG]
    # the default environment is os.environ: DISPLAY is set for this test only
    bridge = B.detect()
    assert bridge is not None and bridge.env["DISPLAY"] == xserver["DISPLAY"]
    bridge.close()


def test_detect_xsel_when_xclip_is_missing(xserver: dict[str, str], tmp_path: Path) -> None:
    _need("xsel")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "xsel").symlink_to(shutil.which("xsel") or "xsel")
    bridge = B.detect(dict(xserver, PATH=str(bin_dir)))
    assert isinstance(bridge, B.XselBridge) and bridge.name == "x11-xsel"
    with bridge:
        text = "xsel: grüße 🙂"
        bridge.push({B.TEXT: text.encode()})
        assert xget(xserver) == text.encode()
        assert bridge.pull() is None
        xset(xserver, "from xclip ✓".encode())
        assert bridge.pull() == {B.TEXT: "from xclip ✓".encode()}
        assert bridge.pull() is None
        # xsel carries no images: an image-only push leaves the desktop alone
        bridge.push({B.PNG: png_of("RGB", (1, 1), b"\x01\x02\x03")})
        assert bridge.server_pid is None and xget(xserver) == "from xclip ✓".encode()
        bridge.push({B.TEXT: b"again"})
        pid = bridge.server_pid
        assert pid is not None and xget(xserver) == b"again"
    assert _wait_gone(pid)


# --------------------------------------------------------------------------- X11 with xclip


def test_push_text_is_pasted_by_other_programs(xserver: dict[str, str]) -> None:
    bridge = B.detect()
    assert isinstance(bridge, B.XclipBridge)
    pids = []
    for text in ("plain ascii", "héllo wörld \u2013 日本語 🎉\nline 2\n", "x" * 300_000):
        bridge.push({B.TEXT: text.encode()})
        assert xget(xserver) == text.encode()
        assert xget(xserver, "UTF8_STRING") == text.encode()
        assert "UTF8_STRING" in targets(xserver)
        assert bridge.pull() is None  # our own content is not news
        assert bridge.server_pid is not None
        pids.append(bridge.server_pid)
    # each push's server ended once the next one took the selection; close ends the last
    assert all(_wait_gone(p) for p in pids[:-1])
    assert _alive(pids[-1])
    bridge.close()
    assert _wait_gone(pids[-1])
    assert xget(xserver, "TARGETS") is None  # nobody owns the clipboard now
    bridge.close()  # idempotent


def test_pull_reports_other_programs_changes_once(xserver: dict[str, str]) -> None:
    with B.detect() as bridge:
        assert bridge is not None
        assert bridge.pull() is None  # empty desktop clipboard
        xset(xserver, "from another program ✓".encode())
        assert bridge.pull() == {B.TEXT: "from another program ✓".encode()}
        assert bridge.pull() is None
        xset(xserver, b"second")
        assert bridge.pull() == {B.TEXT: b"second"}
        xset(xserver, b"second")  # copied again, same content: nothing new
        assert bridge.pull() is None
        # an owner offering only STRING (Latin-1) is read as text too
        xset(xserver, "café".encode("latin-1"), "STRING")
        assert bridge.pull() == {B.TEXT: "café".encode()}
        bridge.push({B.TEXT: b"ours"})
        assert bridge.pull() is None
        xset(xserver, b"theirs")
        assert bridge.server_pid is None or _wait_gone(bridge.server_pid)  # ours lost the selection
        assert bridge.pull() == {B.TEXT: b"theirs"}


def test_last_digest_lets_a_new_bridge_know_the_content(xserver: dict[str, str]) -> None:
    xset(xserver, b"already in step")
    with B.detect() as fresh:
        assert fresh is not None
        assert fresh.pull() == {B.TEXT: b"already in step"}
        assert fresh.last_digest == B.digest({B.TEXT: b"already in step"})
    with B.detect() as seeded:
        assert seeded is not None
        seeded.last_digest = B.digest({B.TEXT: b"already in step"})
        assert seeded.pull() is None
    assert B.digest({B.TEXT: b"a", B.PNG: b"b"}) == B.digest({B.PNG: b"b", B.TEXT: b"a"})
    assert B.digest({B.TEXT: b"ab"}) != B.digest({B.TEXT: b"a", B.PNG: b"b"})


def test_images_both_ways(xserver: dict[str, str]) -> None:
    theirs = png_of("RGB", (3, 2), bytes(range(18)))
    xset(xserver, theirs, "image/png")
    assert targets(xserver) == ["TARGETS", "image/png"]
    with B.detect() as bridge:
        assert bridge is not None
        assert bridge.pull() == {B.PNG: theirs}
        assert bridge.pull() is None
        ours = png_of("RGBA", (2, 2), bytes(range(16)))
        bridge.push({B.PNG: ours})
        assert "image/png" in targets(xserver)
        assert xget(xserver, "image/png") == ours
        assert bridge.pull() is None
        big = png_of("RGB", (600, 600), os.urandom(600 * 600 * 3))  # ~1 MB: an INCR transfer
        bridge.push({B.PNG: big})
        assert xget(xserver, "image/png") == big
        xset(xserver, theirs, "image/png")
        assert bridge.pull() == {B.PNG: theirs}


def test_text_and_image_offer_the_text(xserver: dict[str, str]) -> None:
    with B.detect() as bridge:
        assert bridge is not None
        bridge.push({B.TEXT: b"cells", B.PNG: png_of("RGB", (1, 1), b"\x00\x00\x00"), "text/html": b"<b>"})
        assert "UTF8_STRING" in targets(xserver) and "image/png" not in targets(xserver)
        assert xget(xserver) == b"cells"
        assert bridge.pull() is None


def test_push_without_carried_types_gives_up_only_our_selection(xserver: dict[str, str]) -> None:
    with B.detect() as bridge:
        assert bridge is not None
        bridge.push({B.TEXT: b"ours"})
        pid = bridge.server_pid
        assert pid is not None
        bridge.push({"application/x-custom": b"\x00"})
        assert _wait_gone(pid) and bridge.server_pid is None
        assert xget(xserver, "TARGETS") is None
        xset(xserver, b"theirs")
        assert bridge.pull() == {B.TEXT: b"theirs"}
        bridge.push({})
        assert xget(xserver) == b"theirs"


def test_pushing_back_what_was_pulled_is_not_an_echo(xserver: dict[str, str]) -> None:
    with B.detect() as bridge:
        assert bridge is not None
        xset(xserver, b"theirs")
        got = bridge.pull()
        assert got == {B.TEXT: b"theirs"}
        owner = [p for p in _pids_with_env("DISPLAY", xserver["DISPLAY"]) if _alive(p)]
        bridge.push(got)
        assert bridge.server_pid is None  # nothing started: the desktop already shows it
        assert all(_alive(p) for p in owner)
        xset(xserver, b"newer")
        bridge.push(got)  # the desktop moved on: now it is a real copy
        assert bridge.server_pid is not None and xget(xserver) == b"theirs"


def test_close_keep_selection_leaves_the_server_serving(xserver: dict[str, str]) -> None:
    bridge = B.detect()
    assert bridge is not None
    bridge.push({B.TEXT: b"outlives the bridge"})
    pid = bridge.server_pid
    assert pid is not None
    bridge.close(keep_selection=True)
    assert bridge.closed and _alive(pid)
    assert xget(xserver) == b"outlives the bridge"
    xset(xserver, b"another copy")  # the X model: it ends when someone else copies
    assert _wait_gone(pid)
    with pytest.raises(W.InvalidHandle):
        bridge.push({B.TEXT: b"x"})
    with pytest.raises(W.InvalidHandle):
        bridge.pull()


# --------------------------------------------------------------------------- failures, limits


def test_push_rejects_bad_items() -> None:
    bridge = B.XclipBridge({"xclip": "/nonexistent/xclip"}, {}, max_bytes=100)
    cases = [
        ([(B.TEXT, b"ok")], "mapping"),
        ({B.TEXT: "a str"}, "encode it"),
        ({B.TEXT: b"\xff\xfe"}, "not UTF-8"),
        ({B.PNG: b"GIF89a"}, "not a PNG"),
        ({B.TEXT: b"x" * 101}, "101 bytes, more than the limit of 100 bytes"),
        ({B.TEXT: 12}, "bytes-like"),
        ({1: b"x"}, "mime type"),
    ]
    for items, message in cases:
        with pytest.raises(W.InvalidParameter, match=message):
            bridge.push(items)  # type: ignore[arg-type]
    bridge.push({"Text/Plain; Charset=UTF-8": b"fine"})  # spelled otherwise; the tool is missing
    assert bridge.server_pid is None and bridge.last_error
    with pytest.raises(W.InvalidParameter, match="timeout"):
        B.XclipBridge({"xclip": "x"}, {}, timeout=0)
    with pytest.raises(W.InvalidParameter, match="max_bytes"):
        B.XclipBridge({"xclip": "x"}, {}, max_bytes=B.MAX_BYTES + 1)
    bridge.close()


def test_hung_or_flooding_tools_are_killed(tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    hung = _script(tmp_path, "hung", f'echo $$ >> "{pids}"\nexec sleep 60\n')
    bridge = B.XclipBridge({"xclip": hung}, {"PATH": os.defpath}, timeout=0.3)
    assert bridge.pull() is None
    bridge.push({B.TEXT: b"never served"})  # never says it serves the selection
    assert bridge.server_pid is None and "did not serve" in (bridge.last_error or "")
    started = [int(p) for p in pids.read_text().split()]
    assert len(started) >= 2 and all(_wait_gone(p, 5) for p in started)
    bridge.close()
    flood = _script(
        tmp_path,
        "flood",
        'for a in "$@"; do [ "$a" = TARGETS ] && { printf "TARGETS\\nUTF8_STRING\\n"; exit 0; }; done\n'
        "exec head -c 5000000 /dev/zero\n",
    )
    bridge = B.XclipBridge({"xclip": flood}, {"PATH": os.defpath}, max_bytes=1_000_000)
    assert bridge.pull() is None
    bridge = B.XclipBridge({"xclip": flood}, {"PATH": os.defpath})
    assert bridge.pull() == {B.TEXT: bytes(5_000_000)}
    with B.XclipBridge({"xclip": "/nonexistent/xclip"}, {}) as missing:
        assert missing.pull() is None


# --------------------------------------------------------------------------- Wayland, macOS


def _fake_wayland(folder: Path) -> Path:
    """wl-copy / wl-paste stand-ins keeping the 'compositor's selection' in files."""
    bin_dir = folder / "bin"
    bin_dir.mkdir()
    state = folder / "state"
    state.mkdir()
    _script(
        bin_dir,
        "wl-copy",
        f'S="{state}"\necho $$ >> "$S/copy-pids"\n'
        'while [ $# -gt 0 ]; do case "$1" in --type) shift; T="$1";; --foreground) FG=1;; esac; shift; done\n'
        '[ -n "$FG" ] || exit 3\ncat > "$S/data.new"\nprintf %s "$T" > "$S/type"\nmv "$S/data.new" "$S/data"\n'
        "exec sleep 60\n",
    )
    _script(
        bin_dir,
        "wl-paste",
        f'S="{state}"\n[ -e "$S/broken" ] && {{ echo "Failed to connect to a Wayland server" >&2; exit 1; }}\n'
        '[ -e "$S/type" ] || { echo "Nothing is copied" >&2; exit 1; }\n'
        'case "$1" in --list-types) cat "$S/type"; echo; exit 0;; esac\n'
        'while [ $# -gt 0 ]; do case "$1" in --type) shift; T="$1";; esac; shift; done\n'
        'case "$(cat "$S/type")" in "$T") exec cat "$S/data";; '
        'text/plain\\;charset=utf-8) [ "$T" = UTF8_STRING ] && exec cat "$S/data";; esac\n'
        "exit 1\n",
    )
    return state


def test_wayland_bridge(tmp_path: Path) -> None:
    state = _fake_wayland(tmp_path)
    env = {"PATH": f"{tmp_path / 'bin'}:{os.defpath}", "WAYLAND_DISPLAY": "wayland-test"}
    bridge = B.detect(env)
    assert isinstance(bridge, B.WaylandBridge) and bridge.name == "wayland"
    assert bridge.pull() is None  # nothing copied
    text = "wayland: ünïcode ✓\n".encode()
    bridge.push({B.TEXT: text, B.PNG: png_of("RGB", (1, 1), b"\x00\x00\x00")})
    assert (state / "type").read_text() == B.TEXT and (state / "data").read_bytes() == text
    assert bridge.pull() is None
    first = bridge.server_pid
    assert first is not None
    png = png_of("RGB", (2, 1), b"\x01\x02\x03\x04\x05\x06")
    bridge.push({B.PNG: png})
    assert (state / "type").read_text() == B.PNG and (state / "data").read_bytes() == png
    assert _wait_gone(first)  # the previous server is stopped once the new one serves
    second = bridge.server_pid
    assert second is not None
    bridge.close()
    assert _wait_gone(second)
    # another program copies (the stand-in's state changes): pull reports it once
    (state / "type").write_text("image/png")
    (state / "data").write_bytes(png_of("RGB", (1, 1), b"\x09\x09\x09"))
    with B.detect(env) as b2:
        assert b2 is not None
        assert b2.pull() == {B.PNG: png_of("RGB", (1, 1), b"\x09\x09\x09")}
        assert b2.pull() is None
    (state / "broken").write_text("")
    assert B.detect(env) is None  # a compositor that does not answer
    assert B.detect(dict(env, WINIPC_CLIPBOARD_BRIDGE="0")) is None


def test_macos_bridge(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    pb = tmp_path / "pasteboard"
    _script(bin_dir, "pbcopy", f'cat > "{pb}"\nenv > "{tmp_path}/env"\n')
    _script(bin_dir, "pbpaste", f'[ -e "{pb}" ] && cat "{pb}"\nexit 0\n')
    env = {"PATH": f"{bin_dir}:{os.defpath}", "LANG": "C"}
    assert B.detect(env) is None or sys.platform == "darwin"
    monkeypatch.setattr(sys, "platform", "darwin")
    bridge = B.detect(env)
    assert isinstance(bridge, B.MacBridge) and bridge.name == "macos" and not bridge.images
    with bridge:
        text = "pasteboard: 日本語 é\n".encode()
        bridge.push({B.TEXT: text})
        assert pb.read_bytes() == text
        assert "LC_ALL=en_US.UTF-8" in (tmp_path / "env").read_text().split("\n")
        assert bridge.pull() is None
        pb.write_bytes(b"copied in another app")
        assert bridge.pull() == {B.TEXT: b"copied in another app"}
        assert bridge.pull() is None
        bridge.push({B.PNG: png_of("RGB", (1, 1), b"\x00\x00\x00")})  # text only: left alone
        assert pb.read_bytes() == b"copied in another app"


# --------------------------------------------------------------------------- CF_DIB <-> PNG


def _expected(mode: str, pixels: bytes) -> tuple[str, bytes]:
    """What dib_to_png(png_to_dib(png)) gives: all-0 or all-255 alpha become RGB (opaque)."""
    if mode == "RGB":
        return "RGB", pixels
    alpha = pixels[3::4]
    if alpha.strip(b"\x00") and alpha.strip(b"\xff"):
        return "RGBA", pixels
    rgb = b"".join(pixels[i : i + 3] for i in range(0, len(pixels), 4))
    return "RGB", rgb


@settings(max_examples=150, deadline=None)
@given(
    w=st.integers(1, 9),
    h=st.integers(1, 9),
    mode=st.sampled_from(["RGB", "RGBA"]),
    v5=st.booleans(),
    data=st.data(),
)
def test_dib_png_round_trip_is_pixel_exact(w: int, h: int, mode: str, v5: bool, data: st.DataObject) -> None:
    n = w * h * len(mode)
    pixels = data.draw(st.one_of(st.binary(min_size=n, max_size=n), st.just(bytes(n)), st.just(b"\xff" * n)))
    dib = B.png_to_dib(png_of(mode, (w, h), pixels), v5=v5)
    size, dw, dh, planes, bits, comp, size_image = struct.unpack_from("<IiiHHII", dib)
    stride = w * 4 if bits == 32 else (w * 3 + 3) // 4 * 4
    assert (dw, dh, planes) == (w, h, 1) and size_image == stride * h
    if v5:
        assert (size, bits, comp) == (124, 32, B.BI_BITFIELDS) and len(dib) == 124 + stride * h
    else:
        assert (size, comp, bits) == (40, B.BI_RGB, 24 if mode == "RGB" else 32)
        assert len(dib) == 40 + stride * h
    out_mode, out_size, out_pixels = decode(B.dib_to_png(dib))
    assert out_size == (w, h)
    if v5 and mode == "RGB":
        assert (out_mode, out_pixels) == ("RGB", pixels)
    else:
        assert (out_mode, out_pixels) == _expected(mode, pixels)


def _info(w: int, h: int, bits: int, comp: int = B.BI_RGB, colors: int = 0, size: int = 40) -> bytes:
    return struct.pack("<IiiHHIIiiII", size, w, h, 1, bits, comp, 0, 0, 0, colors, 0)


def test_dib_layouts() -> None:
    # 24-bit, bottom-up, rows padded to 4 bytes: the first row in memory is the bottom one
    bottom = b"\x01\x02\x03" + b"\x04\x05\x06" + b"\x00\x00"
    top = b"\x0a\x0b\x0c" + b"\x0d\x0e\x0f" + b"\x00\x00"
    assert decode(B.dib_to_png(_info(2, 2, 24) + bottom + top)) == (
        "RGB", (2, 2), b"\x0c\x0b\x0a\x0f\x0e\x0d" + b"\x03\x02\x01\x06\x05\x04",
    )
    # top-down (negative height)
    assert decode(B.dib_to_png(_info(2, 2, 24)[:8] + struct.pack("<i", -2) + _info(2, 2, 24)[12:] + bottom + top))[2] == (
        b"\x03\x02\x01\x06\x05\x04" + b"\x0c\x0b\x0a\x0f\x0e\x0d"
    )
    # 32-bit BI_RGB: alpha byte used when it varies, opaque when all zero
    px = b"\x01\x02\x03\x80" + b"\x04\x05\x06\xff"
    assert decode(B.dib_to_png(_info(2, 1, 32) + px)) == ("RGBA", (2, 1), b"\x03\x02\x01\x80\x06\x05\x04\xff")
    px0 = b"\x01\x02\x03\x00" + b"\x04\x05\x06\x00"
    assert decode(B.dib_to_png(_info(2, 1, 32) + px0)) == ("RGB", (2, 1), b"\x03\x02\x01\x06\x05\x04")
    # BI_BITFIELDS after a BITMAPINFOHEADER: three masks, no alpha (the fourth byte ignored)
    masks = struct.pack("<III", 0xFF0000, 0xFF00, 0xFF)
    assert decode(B.dib_to_png(_info(2, 1, 32, B.BI_BITFIELDS) + masks + px)) == (
        "RGB", (2, 1), b"\x03\x02\x01\x06\x05\x04",
    )
    # BI_ALPHABITFIELDS in RGBA byte order
    rgba = struct.pack("<IIII", 0xFF, 0xFF00, 0xFF0000, 0xFF000000)
    assert decode(B.dib_to_png(_info(2, 1, 32, B.BI_ALPHABITFIELDS) + rgba + px)) == (
        "RGBA", (2, 1), px,
    )
    # 16-bit 565 bitfields and an 8-bit palette go through Pillow's BMP decoder
    m565 = struct.pack("<III", 0xF800, 0x07E0, 0x001F)
    assert decode(B.dib_to_png(_info(2, 1, 16, B.BI_BITFIELDS) + m565 + struct.pack("<HH", 0xF800, 0x001F)))[2] == (
        b"\xff\x00\x00\x00\x00\xff"
    )
    palette = b"\x00\x00\xff\x00" + b"\x00\xff\x00\x00"  # red, green (BGRX)
    assert decode(B.dib_to_png(_info(3, 1, 8, colors=2) + palette + b"\x01\x00\x01\x00")) == (
        "RGB", (3, 1), b"\x00\xff\x00\xff\x00\x00\x00\xff\x00",
    )
    # an optional color table before 24-bit pixels is skipped
    assert decode(B.dib_to_png(_info(1, 1, 24, colors=1) + b"\x99\x99\x99\x00" + b"\x01\x02\x03\x00"))[2] == b"\x03\x02\x01"
    # BI_PNG: the embedded PNG itself
    png = png_of("RGB", (1, 1), b"\x05\x06\x07")
    assert B.dib_to_png(_info(1, 1, 0, B.BI_PNG)[:20] + struct.pack("<I", len(png)) + _info(1, 1, 0)[24:] + png) == png


def test_malformed_dibs_raise_invalid_data() -> None:
    good = _info(1, 1, 24) + b"\x01\x02\x03\x00"
    bad = {
        "empty": b"",
        "short header": good[:30],
        "biSize": struct.pack("<I", 39) + good[4:],
        "planes": good[:12] + struct.pack("<H", 2) + good[14:],
        "width": _info(0, 1, 24) + b"\x00" * 4,
        "height": _info(1, 0, 24),
        "bits": _info(1, 1, 24, B.BI_BITFIELDS) + b"\x00" * 16,
        "truncated": good[:-1],
        "masks missing": _info(1, 1, 32, B.BI_BITFIELDS) + b"\x00" * 4,
        "palette": _info(1, 1, 8, colors=300) + b"\x00" * 2000,
        "huge": _info(100_000, 100_000, 24),
        "bad PNG": _info(1, 1, 0, B.BI_PNG) + b"not a png",
        "RLE top-down": _info(1, 1, 8, B.BI_RLE8)[:8] + struct.pack("<i", -1) + _info(1, 1, 8)[12:],
    }
    for why, dib in bad.items():
        with pytest.raises(W.InvalidData):
            B.dib_to_png(dib)
            pytest.fail(why)
    with pytest.raises(W.InvalidData, match="limit of 67108864 pixels"):
        B.dib_to_png(bad["huge"])
    with pytest.raises(W.NotSupported, match="BITMAPCOREHEADER"):
        B.dib_to_png(struct.pack("<IHHHH", 12, 1, 1, 1, 24) + b"\x00" * 4)
    with pytest.raises(W.NotSupported, match="biCompression 11"):
        B.dib_to_png(_info(1, 1, 32, 11) + b"\x00" * 4)
    with pytest.raises(W.InvalidParameter, match="not str"):
        B.dib_to_png("text")  # type: ignore[arg-type]


@settings(max_examples=400, deadline=None)
@given(
    head=st.tuples(
        st.sampled_from([40, 52, 56, 108, 124, 12, 41]),
        st.integers(-3, 5),
        st.integers(-5, 5),
        st.sampled_from([1, 1, 0, 2]),
        st.sampled_from([0, 1, 2, 4, 8, 16, 24, 32, 33]),
        st.integers(0, 7),
        st.integers(0, 64),
        st.integers(0, 300),
    ),
    tail=st.binary(max_size=300),
)
def test_dib_fuzz_converts_or_raises_winipc_errors(head: tuple[int, ...], tail: bytes) -> None:
    size, w, h, planes, bits, comp, size_image, colors = head
    dib = struct.pack("<IiiHHIIiiII", size, w, h, planes, bits, comp, size_image, 0, 0, colors, 0) + tail
    for data in (dib, tail):
        try:
            png = B.dib_to_png(data)
        except (W.InvalidData, W.NotSupported):
            continue
        assert decode(png)[1][0] >= 1


@settings(max_examples=200, deadline=None)
@given(data=st.binary(max_size=200), cut=st.integers(0, 200))
def test_png_to_dib_rejects_what_is_not_a_png(data: bytes, cut: int) -> None:
    good = png_of("RGB", (2, 2), bytes(range(12)))
    for candidate in (data, B.PNG_SIGNATURE + data, good[:cut], good[:cut] + data):
        if candidate == good:
            continue
        try:
            B.png_to_dib(candidate)
        except W.InvalidData:
            pass


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    import zlib

    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def test_png_limits_and_pillow_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    huge = B.PNG_SIGNATURE + _png_chunk(b"IHDR", struct.pack(">IIBBBBB", 9000, 9000, 8, 2, 0, 0, 0))
    huge += _png_chunk(b"IDAT", b"")
    with pytest.raises(W.InvalidData, match="9000 x 9000 pixels is more than the limit"):
        B.png_to_dib(huge + _png_chunk(b"IEND", b""))
    with pytest.raises(W.InvalidData, match="signature"):
        B.png_to_dib(b"GIF89a....")
    with pytest.raises(W.InvalidParameter, match="bytes-like"):
        B.png_to_dib(3)  # type: ignore[arg-type]
    # a palette PNG with transparency becomes a 32-bit DIB
    pal = Image.new("P", (2, 1))
    pal.putpalette([255, 0, 0, 0, 0, 255])
    pal.putpixel((1, 0), 1)
    buf = io.BytesIO()
    pal.save(buf, "PNG", transparency=0)
    dib = B.png_to_dib(buf.getvalue())
    assert struct.unpack_from("<H", dib, 14)[0] == 32
    assert decode(B.dib_to_png(dib)) == ("RGBA", (2, 1), b"\xff\x00\x00\x00\x00\x00\xff\xff")
    assert B.have_pillow()
    one = png_of("RGB", (1, 1), b"\x00\x00\x00")
    monkeypatch.setitem(sys.modules, "PIL", None)
    monkeypatch.setitem(sys.modules, "PIL.Image", None)
    assert not B.have_pillow()
    with pytest.raises(W.NotSupported, match="Pillow"):
        B.png_to_dib(one)
    with pytest.raises(W.NotSupported, match="Pillow"):
        B.dib_to_png(_info(1, 1, 24) + b"\x00" * 4)


# --------------------------------------------------------------------------- with the clipboard
CLIP = """
import sys
from winipc import clipboard as C
html = C.register_format("HTML Format")
C.open()
if sys.argv[1] == "set":
    C.empty()
    C.set_text("hello from winipc")
    C.set_data(html, C.encode_html("<b>hello</b>"))
print(C.sequence_number(), C.get_text(), int(C.is_format_available(html)), sep="|")
C.close()
"""


def _clip(env: dict[str, str], action: str) -> list[str]:
    from conftest import SRC

    child = dict(env, PYTHONPATH=SRC + os.pathsep + env.get("PYTHONPATH", ""))
    out = subprocess.run([sys.executable, "-c", CLIP, action], env=child, capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip().split("|")


def test_the_clipboard_follows_the_desktop_across_processes(xserver: dict[str, str]) -> None:
    """What one winipc process copied reaches X; another winipc process sees it as the same
    content (not a desktop change that would drop the HTML); an X program's copy replaces it."""
    seq, text, has_html = _clip(xserver, "set")
    assert (text, has_html) == ("hello from winipc", "1")
    deadline = time.monotonic() + 10
    while xget(xserver) != b"hello from winipc":
        assert time.monotonic() < deadline, "the copy never reached the X clipboard"
        time.sleep(0.02)
    assert _clip(xserver, "get") == [seq, "hello from winipc", "1"]
    xset(xserver, "from X \u00e9".encode())
    seq2, text2, has_html2 = _clip(xserver, "get")
    assert (text2, has_html2) == ("from X \u00e9", "0") and int(seq2) > int(seq)
    assert _clip(xserver, "get") == [seq2, "from X \u00e9", "0"]  # once: no second import
