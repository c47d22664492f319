"""A text file's encoding: refuse a file its first bytes show is in another one, and name
the line and byte of the first byte sequence an encoding cannot read.

Used by the JSONL, JSON and CSV readers and by ``type: text`` sources. A UTF-16 or UTF-32
file must start with a byte-order mark when ``encoding: utf-16`` (or ``utf-32``) does not
say its byte order (``utf-16-le``): without one, the byte order would be a guess, and a
wrong guess decodes into other text without an error.
"""

from __future__ import annotations

import codecs
from typing import IO

from buttermilk.errors import DataSourceError
from buttermilk.flows.location_errors import is_transport_failure

UTF8_HINT = "set encoding: in the data source (e.g. encoding: cp1252) or save the file as UTF-8"
_BOMS = (  # UTF-32 first: its little-endian mark starts with UTF-16's
    (codecs.BOM_UTF32_LE, "utf-32-le", "UTF-32 (little-endian)"),
    (codecs.BOM_UTF32_BE, "utf-32-be", "UTF-32 (big-endian)"),
    (codecs.BOM_UTF8, "utf-8", "UTF-8"),
    (codecs.BOM_UTF16_LE, "utf-16-le", "UTF-16 (little-endian)"),
    (codecs.BOM_UTF16_BE, "utf-16-be", "UTF-16 (big-endian)"),
)
_SNIFF_BYTES = 4096
_SCAN_BYTES = 64 * 1024  # read at a time when looking for a bad byte's line


def is_utf8(encoding: str) -> bool:
    return codecs.lookup(encoding).name in ("utf-8", "utf-8-sig")


def text_encoding(encoding: str) -> str:
    """The codec to open a text file with: UTF-8 drops a byte-order mark (Excel writes one)."""
    return "utf-8-sig" if is_utf8(encoding) else encoding


def _codec(encoding: str) -> str:
    name = codecs.lookup(encoding).name
    return "utf-8" if name == "utf-8-sig" else name


def _own_boms(codec: str) -> tuple[bytes, ...]:
    """The byte-order marks a file in ``codec`` may start with."""
    if codec in ("utf-16", "utf-32"):  # either byte order; the mark tells which
        return tuple(bom for bom, name, _ in _BOMS if name.startswith(codec))
    return tuple(bom for bom, name, _ in _BOMS if name == codec)


def drops_bom_itself(encoding: str) -> bool:
    """Whether decoding with ``encoding`` (as the readers open it) drops a byte-order mark;
    otherwise the readers drop a decoded U+FEFF at the start (UTF-16-LE and the like)."""
    return _codec(encoding) in ("utf-8", "utf-16", "utf-32")


def drop_bom(text: str, encoding: str) -> str:
    """``text`` (the start of a file) without the byte-order mark its codec kept."""
    return text if drops_bom_itself(encoding) else text.removeprefix("\ufeff")


def check_start(fh: IO[bytes], path: str, encoding: str) -> None:
    """Refuse a text file whose first bytes show it is not in ``encoding``: a byte-order
    mark of another encoding, UTF-16 read byte by byte (a NUL beside every character), or
    no byte-order mark where ``encoding`` needs one to know the byte order. Such a file
    may decode without an error, into other text than it holds. Raises DataSourceError
    naming ``path`` and line 1; leaves ``fh`` at its start."""
    try:
        head = fh.read(_SNIFF_BYTES)
        fh.seek(0)
    except OSError as exc:
        if is_transport_failure(exc):
            raise  # the server's failure, not the file's: Location.open names it
        raise DataSourceError(f"{path}: cannot read it ({exc.strerror or exc})") from None
    codec = _codec(encoding)
    shown = "UTF-8" if codec == "utf-8" else encoding
    if head.startswith(_own_boms(codec)):
        return
    for bom, name, label in _BOMS:
        if head.startswith(bom):
            family = name.removesuffix("-le").removesuffix("-be")
            raise DataSourceError(
                f"{path}:1: starts with a {label} byte-order mark, so it is not {shown}; "
                f"set encoding: {family} in the data source"
            )
    if codec in ("utf-16", "utf-32") and head:
        raise DataSourceError(
            f"{path}:1: does not start with a byte-order mark, so encoding: {encoding} "
            f"cannot tell its byte order; set encoding: {codec}-le or {codec}-be if it is "
            f"{codec.upper()}, or else the file's own encoding"
        )
    if "\n".encode(encoding) != b"\n" or len(head) < 4:
        return  # UTF-16 or UTF-32 declared: NUL bytes are expected
    if codec != "utf-8":
        _refuse_utf8(head, path, encoding)
    even, odd = head[0::2], head[1::2]
    for nuls, other, order in ((odd, even, "le"), (even, odd, "be")):
        if nuls.count(0) * 10 >= len(nuls) * 3 and other.count(0) * 20 < len(other):
            raise DataSourceError(
                f"{path}:1: looks like UTF-16 text (a NUL byte beside every character), not "
                f"{shown}; set encoding: utf-16-{order} in the data source"
            )


def _refuse_utf8(head: bytes, path: str, encoding: str) -> None:
    """Refuse UTF-8 text declared as another encoding (cp1252, latin-1, shift_jis): it
    decodes without an error, into other characters (``é`` becomes ``Ã©``). Text in those
    encodings is almost never valid UTF-8 once it has a byte past ASCII."""
    first = next((i for i, byte in enumerate(head) if byte >= 0x80), None)
    if first is None:
        return
    try:
        codecs.getincrementaldecoder("utf-8")().decode(head)  # a character cut at the end is fine
    except UnicodeDecodeError:
        return
    end = first + 1
    while end < len(head) and 0x80 <= head[end] < 0xC0:
        end += 1  # the continuation bytes of the first character
    sample = head[first:end]
    try:
        wrong = sample.decode(encoding)
    except UnicodeDecodeError:
        return  # refused where it is read (ascii, or a byte the codec has no character for)
    line = head[:first].count(b"\n") + 1
    raise DataSourceError(
        f"{path}:{line}: looks like UTF-8, not {encoding} (bytes "
        f"{sample.hex(' ')} are {sample.decode('utf-8')!r} in UTF-8, {wrong!r} in {encoding}); "
        "set encoding: utf-8 in the data source"
    )


class _Lines:
    """Counts the lines of text decoded piece by piece: ``\\n`` ends one, and with
    ``universal`` a lone ``\\r`` too (as the csv module and Python's text files count)."""

    def __init__(self, universal: bool) -> None:
        self.universal = universal
        self.number = 1  # the line the next character is on
        self._return_last = False  # the text so far ends with "\r": is "\n" next?

    def add(self, text: str) -> None:
        if not text:
            return
        self.number += text.count("\n")
        if not self.universal:
            return
        if self._return_last and not text.startswith("\n"):
            self.number += 1  # the "\r" before this text ended a line by itself
        ends = text.count("\r") - text.count("\r\n")
        self._return_last = text.endswith("\r")
        self.number += ends - (1 if self._return_last else 0)

    def at_error(self) -> int:
        """The line of a character that follows the text added so far."""
        return self.number + (1 if self.universal and self._return_last else 0)


def bad_byte_line(fh: IO[bytes], encoding: str, universal: bool) -> tuple[int, int] | None:
    """The line (1-based) of the first byte sequence not valid in ``encoding``, and its
    first byte; None when the whole file decodes. Reads ``fh`` from its start, decoded
    as the readers decode it, so that lines count in any encoding (UTF-16 included).

    ``universal``: a lone carriage return ends a line too (as the csv module counts).
    """
    decoder = codecs.getincrementaldecoder(text_encoding(encoding))()
    lines = _Lines(universal)
    fh.seek(0)
    while chunk := fh.read(_SCAN_BYTES):
        state = decoder.getstate()
        try:
            lines.add(decoder.decode(chunk))
            continue
        except UnicodeDecodeError:
            decoder.setstate(state)
        for index in range(len(chunk)):  # this chunk again, a byte at a time, to the bad one
            try:
                lines.add(decoder.decode(chunk[index : index + 1]))
            except UnicodeDecodeError as exc:
                return lines.at_error(), exc.object[exc.start]
    try:
        decoder.decode(b"", final=True)
    except UnicodeDecodeError as exc:  # the file ends inside a character
        return lines.at_error(), exc.object[exc.start]
    return None


def encoding_error(
    fh: IO[bytes], path: str, encoding: str, exc: UnicodeDecodeError, *, universal: bool
) -> DataSourceError:
    """One line naming the file, the line and the byte that ``encoding`` cannot read
    (``PATH:LINE: not valid ENCODING (byte 0xNN); HINT``)."""
    name = "UTF-8" if is_utf8(encoding) else encoding
    found = bad_byte_line(fh, encoding, universal)
    if found is None:  # the error came from decoding other bytes than the file's
        where, byte = f"{path} (near byte {exc.start})", exc.object[exc.start]
    else:
        where, byte = f"{path}:{found[0]}", found[1]
    hint = UTF8_HINT if is_utf8(encoding) else "check the data source's encoding"
    return DataSourceError(f"{where}: not valid {name} (byte 0x{byte:02x}); {hint}")
