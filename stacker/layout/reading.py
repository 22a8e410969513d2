"""The input-reading layer: what every reader of a user's text file checks before parsing it.

A user's CSV may come from Excel (a byte-order mark, a semicolon delimiter, UTF-16 "Unicode text",
a trailing comma on every line), from Windows (latin-1 / cp1252 bytes), from another team's code
(a gzip or zip archive named ``.csv``) or from a crashed job (a folder where a file should be, a
file that cannot be read). :func:`sniff_text` looks at the first bytes of the file and either
returns how to read it (:class:`TextFormat`) or raises :class:`~stacker.errors.LayoutError` with one
line naming the file and the fix. :func:`read_text` decodes a whole small file (classes.txt,
meta.json) the same way; :func:`not_utf8` turns a parser's ``UnicodeDecodeError`` into that line,
and :func:`first_line` shortens any other parser error to one.

Only a UTF-8 byte-order mark is decoded silently (Excel's "CSV UTF-8" writes one); everything
else that is not UTF-8 is refused, since guessing an encoding could change a label or an id.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from stacker.errors import LayoutError

HEAD_BYTES = 1 << 16
_SAVE_AS = "save it as UTF-8 ('CSV UTF-8 (comma delimited)' in Excel)"
_DELIMITERS = {";": "';'", "\t": "tab", "|": "'|'"}


@dataclass(frozen=True)
class TextFormat:
    """How to read one text file: its encoding ('utf-8' or 'utf-8-sig' for a byte-order mark)
    and whether every line ends in a stray comma (an empty last header field, Excel's habit)."""

    encoding: str
    trailing_comma: bool = False


def read_bytes(path: Path | str, *, what: str = "file", experiment: str | None = None) -> bytes:
    """The whole content of ``path`` in one open; LayoutError (as :func:`sniff_text` words it)
    when it is a folder, missing or unreadable. Pass it as ``head`` to :func:`sniff_text`."""
    return _read_head(Path(path), what=what, experiment=experiment, size=-1)


def _read_head(path: Path, *, what: str, experiment: str | None, size: int = HEAD_BYTES) -> bytes:
    try:
        with open(path, "rb") as handle:
            return handle.read(size)
    except IsADirectoryError:
        raise LayoutError(f"{what} is a folder, not a file; remove or rename the folder",
                          experiment=experiment, path=path) from None
    except FileNotFoundError:
        raise LayoutError(f"{what} is missing", experiment=experiment, path=path) from None
    except OSError as error:   # permissions, a symlink loop, an I/O error
        unreadable = LayoutError(f"{what} cannot be read ({error.strerror or error}); check the "
                                 "file and its permissions", experiment=experiment, path=path)
        unreadable.transient = True   # a fix (chmod) changes no mtime: caches must not keep it
        raise unreadable from None


def _refuse_binary(head: bytes, path: Path, *, what: str, experiment: str | None) -> None:
    problem = None
    if head.startswith(b"\x1f\x8b"):
        problem = "is a gzip archive, not text; decompress it (gunzip) and pass the plain file"
    elif head.startswith(b"PK\x03\x04"):
        problem = ("is a zip archive (or an Excel workbook), not text; extract it, or save it "
                   "from Excel as 'CSV UTF-8 (comma delimited)'")
    elif head.startswith((b"\xff\xfe", b"\xfe\xff")) or (len(head) > 1 and head.count(b"\x00") * 4 > len(head)):
        problem = f"is UTF-16 text (Excel's 'Unicode Text'), not UTF-8; {_SAVE_AS}"
    elif b"\x00" in head:
        problem = "holds binary data (a NUL byte), not text; pass the text file"
    if problem:
        raise LayoutError(f"{what} {problem}", experiment=experiment, path=path)


def not_utf8(path: Path | str, error: UnicodeDecodeError, *, what: str = "file",
             experiment: str | None = None, offset: int = 0) -> LayoutError:
    """The one-line error for a file whose bytes are not UTF-8 (latin-1, cp1252 from Windows)."""
    position = offset + error.start
    try:
        with open(path, "rb") as handle:
            line = handle.read(position).count(b"\n") + 1
    except OSError:
        line = None
    byte = error.object[error.start:error.start + 1].hex() if error.object else "?"
    where = f"line {line}" if line else f"byte {position}"
    return LayoutError(f"{what} is not UTF-8 text (byte 0x{byte} on {where}, probably latin-1 or "
                       f"Windows-1252); {_SAVE_AS}", experiment=experiment, path=path)


def first_line(error: Exception) -> str:
    """The first line of ``error``'s message (its type's name when it has none): a parser's long
    message shortened to fit the one-line LayoutError that names the file."""
    return str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__


def sniff_text(path: Path | str, *, what: str = "file", experiment: str | None = None,
               tabular: bool = True, head: bytes | None = None) -> TextFormat:
    """Check the first bytes of ``path``; a :class:`TextFormat` to read it with, or LayoutError.

    tabular: the file is a CSV whose header must be comma-separated (a header with no comma but
    a ';', a tab or a '|' is refused, naming the delimiter). head: the file's bytes when the
    caller has read them already (:func:`read_bytes`), so that the file is opened once.
    """
    path = Path(path)
    if head is None:
        head = _read_head(path, what=what, experiment=experiment)
    head = head[:HEAD_BYTES]
    _refuse_binary(head, path, what=what, experiment=experiment)
    encoding = "utf-8-sig" if head.startswith(b"\xef\xbb\xbf") else "utf-8"
    body = head[3:] if encoding == "utf-8-sig" else head
    first_line = body.split(b"\n", 1)[0]
    try:
        header = first_line.decode("utf-8")
    except UnicodeDecodeError as error:
        raise not_utf8(path, error, what=what, experiment=experiment,
                       offset=len(head) - len(body)) from None
    # the head may cut a multi-byte character at its end: check all but the last 3 bytes
    try:
        body[:len(body) - 3 if len(head) == HEAD_BYTES else len(body)].decode("utf-8")
    except UnicodeDecodeError as error:
        raise not_utf8(path, error, what=what, experiment=experiment,
                       offset=len(head) - len(body)) from None
    header = header.rstrip("\r")
    if tabular and "," not in header:
        for delimiter, name in _DELIMITERS.items():
            if delimiter in header:
                raise LayoutError(f"{what} uses the delimiter {name}, not ','; save it as "
                                  "comma-separated CSV (header: "
                                  f"{header[:60]!r})", experiment=experiment, path=path)
    trailing = tabular and header.endswith(",") and header.count(",") >= 2
    return TextFormat(encoding=encoding, trailing_comma=trailing)


def read_text(path: Path | str, *, what: str = "file", experiment: str | None = None) -> str:
    """The whole text of a small file (classes.txt, meta.json, a JSON document), decoded as
    UTF-8 (a byte-order mark dropped); LayoutError for anything that is not UTF-8 text."""
    path = Path(path)
    fmt = sniff_text(path, what=what, experiment=experiment, tabular=False)
    try:
        with open(path, encoding=fmt.encoding, newline=None) as handle:
            return handle.read()
    except UnicodeDecodeError as error:
        raise not_utf8(path, error, what=what, experiment=experiment,
                       offset=3 if fmt.encoding == "utf-8-sig" else 0) from None
    except OSError as error:
        raise LayoutError(f"{what} cannot be read ({error.strerror or error})",
                          experiment=experiment, path=path) from None
