"""Clipboard formats: constants, Windows' synthesized conversions, CF_HDROP and "HTML Format".

Pure byte work, no I/O. The conversions follow Microsoft's "Synthesized Clipboard Formats"
table:

=================  ==========================================
placed             also offered (synthesized)
=================  ==========================================
CF_UNICODETEXT     CF_TEXT, CF_OEMTEXT, CF_LOCALE
CF_TEXT            CF_UNICODETEXT, CF_OEMTEXT, CF_LOCALE
CF_OEMTEXT         CF_UNICODETEXT, CF_TEXT, CF_LOCALE
CF_DIB             CF_BITMAP, CF_DIBV5
CF_DIBV5           CF_BITMAP, CF_DIB
CF_BITMAP          CF_DIB, CF_DIBV5
=================  ==========================================

Text: CF_UNICODETEXT is UTF-16LE with a 2-byte NUL terminator, CF_TEXT the ANSI code page
(cp1252) and CF_OEMTEXT the OEM code page (cp437), each with a NUL terminator; a converted
text stops at the source's first NUL, and characters the target code page lacks become
``?``. CF_LOCALE is a 4-byte little-endian LCID (0x0409, en-US).

Bitmaps: on Windows CF_BITMAP is a GDI handle (HBITMAP); here it is carried as the bytes
of a packed DIB (BITMAPINFOHEADER, colour table, pixels), the same bytes CF_DIB gives.
CF_DIB and CF_DIBV5 convert into each other by rewriting the header (BITMAPINFOHEADER,
40 bytes, with BI_BITFIELDS masks after it; BITMAPV5HEADER, 124 bytes, masks inside it,
sRGB colour space); an embedded colour profile is dropped. CF_PALETTE is not synthesized.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Sequence

from winipc.errors import InvalidData, InvalidParameter

CF_TEXT = 1
CF_BITMAP = 2
CF_METAFILEPICT = 3
CF_SYLK = 4
CF_DIF = 5
CF_TIFF = 6
CF_OEMTEXT = 7
CF_DIB = 8
CF_PALETTE = 9
CF_PENDATA = 10
CF_RIFF = 11
CF_WAVE = 12
CF_UNICODETEXT = 13
CF_ENHMETAFILE = 14
CF_HDROP = 15
CF_LOCALE = 16
CF_DIBV5 = 17
CF_OWNERDISPLAY = 0x0080
CF_DSPTEXT = 0x0081
CF_DSPBITMAP = 0x0082
CF_DSPMETAFILEPICT = 0x0083
CF_DSPENHMETAFILE = 0x008E
CF_PRIVATEFIRST = 0x0200
CF_PRIVATELAST = 0x02FF
CF_GDIOBJFIRST = 0x0300
CF_GDIOBJLAST = 0x03FF
#: registered formats (RegisterClipboardFormat) take ids from this range
REGISTERED_FIRST = 0xC000
REGISTERED_LAST = 0xFFFF

TEXT_FORMATS = (CF_UNICODETEXT, CF_TEXT, CF_OEMTEXT)
BITMAP_FORMATS = (CF_DIB, CF_DIBV5, CF_BITMAP)
ANSI_CODEPAGE = "cp1252"
OEM_CODEPAGE = "cp437"
LOCALE_LCID = 0x0409

_CODEPAGE = {CF_TEXT: ANSI_CODEPAGE, CF_OEMTEXT: OEM_CODEPAGE}


def check_format(fmt: object, arg: str = "fmt") -> int:
    """Validate a clipboard format id (UINT 1..0xFFFF)."""
    if isinstance(fmt, bool) or not isinstance(fmt, int):
        raise InvalidParameter(f"{arg} must be an int clipboard format, not {type(fmt).__name__}")
    if not 1 <= fmt <= 0xFFFF:
        raise InvalidParameter(f"{arg}={fmt} is out of range: clipboard formats are 1..0xFFFF")
    return fmt


# --------------------------------------------------------------------------- text


def _decode_bytes(data: bytes, codepage: str) -> str:
    """Bytes of a code page to str, as MultiByteToWideChar does (undefined bytes map to U+00xx)."""
    try:
        return data.decode(codepage)
    except UnicodeDecodeError:
        out = []
        for b in data:
            try:
                out.append(bytes([b]).decode(codepage))
            except UnicodeDecodeError:
                out.append(chr(b))
        return "".join(out)


def decode_text(fmt: int, data: bytes) -> str:
    """The text a CF_TEXT / CF_OEMTEXT / CF_UNICODETEXT block holds, up to its first NUL."""
    if fmt == CF_UNICODETEXT:
        n = len(data) - len(data) % 2
        for i in range(0, n, 2):
            if data[i] == 0 and data[i + 1] == 0:
                n = i
                break
        return data[:n].decode("utf-16-le", errors="replace")
    if fmt in _CODEPAGE:
        end = data.find(b"\0")
        return _decode_bytes(data if end < 0 else data[:end], _CODEPAGE[fmt])
    raise InvalidParameter(f"format {fmt} is not a text format")


def encode_text(fmt: int, text: str) -> bytes:
    """``text`` as Windows stores it in ``fmt``, NUL-terminated; unmappable characters -> ``?``."""
    if fmt == CF_UNICODETEXT:
        return text.encode("utf-16-le", errors="surrogatepass") + b"\0\0"
    if fmt in _CODEPAGE:
        return text.encode(_CODEPAGE[fmt], errors="replace") + b"\0"
    raise InvalidParameter(f"format {fmt} is not a text format")


# --------------------------------------------------------------------------- bitmaps

_BIH = struct.Struct("<IiiHHIIiiII")  # BITMAPINFOHEADER, 40 bytes
BIH_SIZE = 40
V5_SIZE = 124
BI_RGB, BI_RLE8, BI_RLE4, BI_BITFIELDS, BI_JPEG, BI_PNG, BI_ALPHABITFIELDS = 0, 1, 2, 3, 4, 5, 6
LCS_SRGB = 0x73524742  # 'sRGB'
LCS_GM_IMAGES = 4


def _dib_parts(dib: bytes) -> tuple[tuple[int, ...], int, list[int], bytes, bytes]:
    """(header fields, header size, masks, colour table, pixel bits) of a packed DIB or V5."""
    if len(dib) < BIH_SIZE:
        raise InvalidData(f"DIB is {len(dib)} bytes; a BITMAPINFOHEADER alone is {BIH_SIZE}")
    fields = _BIH.unpack_from(dib)
    hsize = fields[0]
    if hsize < BIH_SIZE or hsize > len(dib):
        raise InvalidData(f"DIB header size {hsize} is invalid for {len(dib)} bytes")
    bpp, compression, clr_used = fields[4], fields[5], fields[9]
    pos = hsize
    masks: list[int] = []
    nmasks = 3 if compression == BI_BITFIELDS else 4 if compression == BI_ALPHABITFIELDS else 0
    if nmasks:
        if hsize == BIH_SIZE:
            if len(dib) < pos + 4 * nmasks:
                raise InvalidData("DIB ends inside its colour masks")
            masks = list(struct.unpack_from(f"<{nmasks}I", dib, pos))
            pos += 4 * nmasks
        elif hsize >= 56:
            masks = list(struct.unpack_from("<4I", dib, 40))[:nmasks]
        else:
            masks = list(struct.unpack_from(f"<{min(nmasks, (hsize - 40) // 4)}I", dib, 40))
    colors = clr_used if clr_used else (1 << bpp if bpp <= 8 and compression in (BI_RGB, BI_RLE4, BI_RLE8) else 0)
    if colors > 256 and bpp <= 8:
        raise InvalidData(f"DIB claims {colors} colours at {bpp} bits per pixel")
    table_end = pos + 4 * colors
    if table_end > len(dib):
        raise InvalidData("DIB ends inside its colour table")
    table = dib[pos:table_end]
    width, height, size_image = fields[1], fields[2], fields[6]
    if compression in (BI_RGB, BI_BITFIELDS, BI_ALPHABITFIELDS):
        stride = ((abs(width) * bpp + 31) // 32) * 4
        need = stride * abs(height)
    else:
        need = size_image or len(dib) - table_end
    bits = dib[table_end : table_end + need]
    if len(bits) < need:
        raise InvalidData(f"DIB pixel data is {len(bits)} bytes; the header needs {need}")
    return fields, hsize, masks, table, bits


def dib_from_v5(v5: bytes) -> bytes:
    """CF_DIB bytes (BITMAPINFOHEADER) from CF_DIBV5 bytes (or another packed DIB)."""
    fields, _hsize, masks, table, bits = _dib_parts(v5)
    header = _BIH.pack(BIH_SIZE, *fields[1:])
    return header + b"".join(struct.pack("<I", m) for m in masks) + table + bits


def v5_from_dib(dib: bytes) -> bytes:
    """CF_DIBV5 bytes (BITMAPV5HEADER, sRGB) from CF_DIB bytes (or a V5 itself, normalized)."""
    fields, _hsize, masks, table, bits = _dib_parts(dib)
    m = ([*masks, 0, 0, 0, 0])[:4]
    v5 = _BIH.pack(V5_SIZE, *fields[1:])
    v5 += struct.pack("<4I", *m)  # red, green, blue, alpha masks
    v5 += struct.pack("<I", LCS_SRGB) + bytes(36) + bytes(12)  # CSType, endpoints, gammas
    v5 += struct.pack("<IIII", LCS_GM_IMAGES, 0, 0, 0)  # intent, profile data/size, reserved
    assert len(v5) == V5_SIZE
    return v5 + table + bits


# --------------------------------------------------------------------------- synthesis


def synthesis_sources(fmt: int) -> tuple[int, ...]:
    """The real formats ``fmt`` can be synthesized from, in order of preference."""
    if fmt == CF_UNICODETEXT:
        return (CF_TEXT, CF_OEMTEXT)
    if fmt == CF_TEXT:
        return (CF_UNICODETEXT, CF_OEMTEXT)
    if fmt == CF_OEMTEXT:
        return (CF_UNICODETEXT, CF_TEXT)
    if fmt == CF_LOCALE:
        return (CF_UNICODETEXT, CF_TEXT, CF_OEMTEXT)
    if fmt == CF_DIB:
        return (CF_DIBV5, CF_BITMAP)
    if fmt == CF_DIBV5:
        return (CF_DIB, CF_BITMAP)
    if fmt == CF_BITMAP:
        return (CF_DIB, CF_DIBV5)
    return ()


def synthesized_formats(real: Sequence[int]) -> list[int]:
    """The formats Windows adds to ``real`` (in the order EnumClipboardFormats lists them)."""
    have = set(real)
    out: list[int] = []
    order = (CF_UNICODETEXT, CF_LOCALE, CF_TEXT, CF_OEMTEXT, CF_DIB, CF_BITMAP, CF_DIBV5)
    for fmt in order:
        if fmt not in have and any(src in have for src in synthesis_sources(fmt)):
            out.append(fmt)
    return out


def convert(fmt: int, src_fmt: int, data: bytes) -> bytes:
    """Synthesize ``fmt`` from ``data`` stored as ``src_fmt``."""
    if fmt == CF_LOCALE:
        return struct.pack("<I", LOCALE_LCID)
    if fmt in TEXT_FORMATS and src_fmt in TEXT_FORMATS:
        return encode_text(fmt, decode_text(src_fmt, data))
    if fmt in BITMAP_FORMATS and src_fmt in BITMAP_FORMATS:
        if fmt == CF_DIBV5:
            return v5_from_dib(data)
        return dib_from_v5(data)  # CF_DIB, and CF_BITMAP carried as DIB bytes
    raise InvalidParameter(f"format {fmt} cannot be synthesized from format {src_fmt}")


# --------------------------------------------------------------------------- CF_HDROP

_DROPFILES = struct.Struct("<IiiII")  # pFiles, pt.x, pt.y, fNC, fWide
DROPFILES_SIZE = _DROPFILES.size  # 20


def encode_hdrop(
    paths: Iterable[str], *, point: tuple[int, int] = (0, 0), nonclient: bool = False
) -> bytes:
    """A CF_HDROP block: DROPFILES (20 bytes, fWide=1) then UTF-16LE paths, each NUL-ended, and a final NUL.

    Args:
        paths: the file names (non-empty, without NUL characters).
        point: the drop point (``pt``), client coordinates unless ``nonclient``.
        nonclient: ``fNC``.

    Raises:
        InvalidParameter: an empty path or one with a NUL character.
    """
    body = bytearray()
    for p in paths:
        if not isinstance(p, str) or not p or "\0" in p:
            raise InvalidParameter(f"paths: {p!r} is not a non-empty file name without NUL")
        body += p.encode("utf-16-le", errors="surrogatepass") + b"\0\0"
    body += b"\0\0"
    x, y = point
    return _DROPFILES.pack(DROPFILES_SIZE, x, y, int(bool(nonclient)), 1) + bytes(body)


def decode_hdrop(data: bytes) -> list[str]:
    """The file names of a CF_HDROP block (DragQueryFile); handles fWide=0 (ANSI, cp1252).

    Raises:
        InvalidData: shorter than DROPFILES, an offset outside the block, or no terminator.
    """
    data = bytes(data)
    if len(data) < DROPFILES_SIZE:
        raise InvalidData(f"CF_HDROP block is {len(data)} bytes; DROPFILES alone is {DROPFILES_SIZE}")
    offset, _x, _y, _nc, wide = _DROPFILES.unpack_from(data)
    if not DROPFILES_SIZE <= offset <= len(data):
        raise InvalidData(f"CF_HDROP pFiles offset {offset} is outside the {len(data)}-byte block")
    out: list[str] = []
    pos = offset
    if wide:
        while True:
            end = pos
            while end + 1 < len(data) and (data[end] or data[end + 1]):
                end += 2
            if end + 1 >= len(data):
                raise InvalidData("CF_HDROP file list has no terminating NUL")
            if end == pos:
                return out
            out.append(data[pos:end].decode("utf-16-le", errors="surrogatepass"))
            pos = end + 2
    while True:
        end = data.find(b"\0", pos)
        if end < 0:
            raise InvalidData("CF_HDROP file list has no terminating NUL")
        if end == pos:
            return out
        out.append(_decode_bytes(data[pos:end], ANSI_CODEPAGE))
        pos = end + 1


# --------------------------------------------------------------------------- HTML Format

HTML_FORMAT_NAME = "HTML Format"
_START_MARK = "<!--StartFragment-->"
_END_MARK = "<!--EndFragment-->"
_HEADER_KEYS = ("Version", "StartHTML", "EndHTML", "StartFragment", "EndFragment")


def encode_html(fragment: str, *, source_url: str | None = None, before: str = "", after: str = "") -> bytes:
    """A CF_HTML block ("HTML Format") holding ``fragment``.

    The description header (Version:0.9, StartHTML, EndHTML, StartFragment, EndFragment,
    optional SourceURL) gives 10-digit byte offsets into the UTF-8 block; the fragment is
    wrapped in ``<html><body>`` (``before``/``after`` go around it inside the body) and
    marked with ``<!--StartFragment-->`` / ``<!--EndFragment-->``.

    Raises:
        InvalidParameter: ``source_url`` holds a line break.
    """
    if source_url is not None and ("\r" in source_url or "\n" in source_url):
        raise InvalidParameter("source_url must not contain line breaks")
    tmpl = [
        "Version:0.9\r\n",
        "StartHTML:{sh:010d}\r\n",
        "EndHTML:{eh:010d}\r\n",
        "StartFragment:{sf:010d}\r\n",
        "EndFragment:{ef:010d}\r\n",
    ]
    if source_url is not None:
        tmpl.append(f"SourceURL:{source_url}\r\n")
    header_len = len("".join(tmpl).format(sh=0, eh=0, sf=0, ef=0).encode())
    pre = f"<html>\r\n<body>\r\n{before}{_START_MARK}".encode()
    frag = fragment.encode("utf-8", errors="surrogatepass")
    post = f"{_END_MARK}{after}\r\n</body>\r\n</html>".encode()
    sh = header_len
    sf = sh + len(pre)
    ef = sf + len(frag)
    eh = ef + len(post)
    header = "".join(tmpl).format(sh=sh, eh=eh, sf=sf, ef=ef).encode()
    return header + pre + frag + post


def decode_html(data: bytes) -> str:
    """The fragment of a CF_HTML block (the bytes between StartFragment and EndFragment).

    Trailing NULs are ignored. Raises InvalidData when the header lacks the offsets or they
    fall outside the block.
    """
    raw = bytes(data).rstrip(b"\0")
    fields: dict[str, str] = {}
    pos = 0
    while pos < len(raw) and raw[pos : pos + 1] != b"<":
        end = raw.find(b"\n", pos)
        line = raw[pos : len(raw) if end < 0 else end].decode("ascii", errors="replace").rstrip("\r")
        key, sep, value = line.partition(":")
        if not sep:
            break
        fields[key.strip()] = value.strip()
        if end < 0:
            break
        pos = end + 1
    try:
        sf = int(fields["StartFragment"])
        ef = int(fields["EndFragment"])
    except (KeyError, ValueError):
        raise InvalidData("HTML Format block lacks StartFragment/EndFragment offsets") from None
    if not 0 <= sf <= ef <= len(raw):
        raise InvalidData(f"HTML Format fragment offsets {sf}..{ef} fall outside the {len(raw)}-byte block")
    return raw[sf:ef].decode("utf-8", errors="surrogatepass")
