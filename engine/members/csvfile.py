"""Reading the CSV files people export from Excel and membership systems, and writing ours.

Files arrive as UTF-8 (with or without a BOM) or as Windows-1252 from Excel.
Rows are streamed, never held in memory, and every row carries its line
number so errors can say `FILE:LINE: field: problem`. Every CSV file the
engine writes goes through `write_csv`, which keeps spreadsheets from running
cells as formulas.
"""

from __future__ import annotations

import codecs
import csv
import io
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from engine.errors import CampaignError
from engine.store.files import atomic_file, make_folder

_CHUNK = 1 << 20
csv.field_size_limit(1 << 24)


def header_key(name: str) -> str:
    """Case-, space- and punctuation-insensitive form of a header ('Membership No' → 'membershipno')."""
    return re.sub(r"[^0-9a-z]", "", name.lower())


def field_name(name: str) -> str:
    """A header as a merge-field identifier ('Years in post' → 'years_in_post')."""
    ident = re.sub(r"[^0-9a-z]+", "_", name.strip().lower()).strip("_")
    if ident and ident[0].isdigit():
        ident = "f_" + ident
    return ident


def detect_encoding(path: Path) -> str:
    """'utf-8-sig' when the whole file decodes as UTF-8, else 'cp1252' (Excel's ANSI)."""
    with path.open("rb") as f:
        start = f.read(4)
        if start.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
            raise CampaignError(
                f"{path}: is UTF-16 ('Unicode text' in Excel); save it as 'CSV UTF-8' instead"
            )
        f.seek(0)
        decoder = codecs.getincrementaldecoder("utf-8")()
        try:
            while chunk := f.read(_CHUNK):
                decoder.decode(chunk)
            decoder.decode(b"", final=True)
        except UnicodeDecodeError:
            _check_cp1252(path, f)
            return "cp1252"
    return "utf-8-sig"


# Bytes Windows-1252 leaves undefined: a file holding them is neither UTF-8 nor Excel's ANSI.
_NOT_CP1252 = re.compile(rb"[\x81\x8d\x8f\x90\x9d]")


def _check_cp1252(path: Path, f: io.BufferedReader) -> None:
    f.seek(0)
    line = 1
    while chunk := f.read(_CHUNK):
        bad = _NOT_CP1252.search(chunk)
        if bad:
            line += chunk.count(b"\n", 0, bad.start())
            raise CampaignError(
                f"{path}:{line}: neither UTF-8 nor Windows-1252 (byte 0x{chunk[bad.start()]:02x}); "
                "save it as 'CSV UTF-8' or pass --encoding"
            )
        line += chunk.count(b"\n")


@dataclass
class CsvRow:
    line: int
    values: dict[str, str]  # canonical field name → stripped value
    raw: list[str]
    overflow: bool = False  # more non-empty cells than headers: an unquoted comma?


class CsvSource:
    """One CSV file opened for streaming, with headers mapped to canonical names.

    `known` maps header_key(header) → canonical name; other headers are kept
    under field_name(header) when `keep_extra`, and listed in `extra`.
    """

    def __init__(
        self,
        path: str | Path,
        known: Mapping[str, str],
        required: tuple[str, ...] = (),
        *,
        encoding: str | None = None,
        keep_extra: bool = False,
    ):
        self.path = Path(path)
        if not self.path.is_file():
            raise CampaignError(f"{self.path}: no such file")
        self.encoding = encoding or detect_encoding(self.path)
        try:
            codecs.lookup(self.encoding)
        except LookupError:
            raise CampaignError(f"--encoding: unknown encoding {self.encoding!r}") from None
        self._binary = self.path.open("rb")
        self.size = self.path.stat().st_size
        text = io.TextIOWrapper(self._binary, encoding=self.encoding, newline="")
        self._reader = csv.reader(text)
        try:
            self.header = next(self._reader)
        except StopIteration:
            self.close()
            raise CampaignError(f"{self.path}: the file is empty") from None
        except (UnicodeDecodeError, csv.Error) as exc:
            self.close()
            raise self._read_error(exc) from None
        self.columns: list[str | None] = []
        self.extra: list[str] = []
        seen: dict[str, str] = {}
        for header in self.header:
            key = header_key(header)
            name = known.get(key)
            if name is None and key and keep_extra:
                name = field_name(header)
                self.extra.append(name)
            if name is not None:
                if name in seen:
                    self.close()
                    raise CampaignError(
                        f"{self.path}:1: columns {seen[name]!r} and {header!r} are the same field"
                    )
                seen[name] = header
            self.columns.append(name)
        missing = [name for name in required if name not in seen]
        if missing:
            self.close()
            raise CampaignError(f"{self.path}:1: missing column(s): {', '.join(missing)}")
        self.fields = [c for c in self.columns if c is not None]

    def _read_error(self, exc: Exception) -> CampaignError:
        line = self._reader.line_num + 1
        if isinstance(exc, UnicodeDecodeError):
            return CampaignError(
                f"{self.path}:{line}: cannot be read as {self.encoding} "
                f"(byte 0x{exc.object[exc.start]:02x}); save it as 'CSV UTF-8' or pass --encoding"
            )
        return CampaignError(f"{self.path}:{line}: not valid CSV: {exc}")

    def position(self) -> int:
        """Bytes of the file consumed so far (read-ahead included), for progress bars."""
        return self._binary.tell()

    def rows(self, progress: Callable[[int], None] | None = None) -> Iterator[CsvRow]:
        columns = self.columns
        width = len(columns)
        # Every column kept (the usual case): one C-level zip instead of a test per cell.
        every = None not in columns
        last = 0
        # A quoted cell may hold line breaks: a row is named by the line it starts on.
        end = self._reader.line_num
        try:
            for raw in self._reader:
                start, end = end + 1, self._reader.line_num
                if not raw or (len(raw) == 1 and not raw[0].strip()):
                    continue  # blank line, as Excel leaves at the end
                overflow = len(raw) > width and any(v.strip() for v in raw[width:])
                if len(raw) < width:
                    raw = raw + [""] * (width - len(raw))
                if every:
                    values = dict(zip(columns, map(str.strip, raw), strict=False))  # type: ignore[arg-type]
                else:
                    values = {
                        name: value.strip()
                        for name, value in zip(columns, raw, strict=False)
                        if name is not None
                    }
                yield CsvRow(start, values, raw, overflow)
                if progress is not None and self._reader.line_num % 2000 == 0:
                    pos = self._binary.tell()
                    progress(pos - last)
                    last = pos
        except (UnicodeDecodeError, csv.Error) as exc:
            raise self._read_error(exc) from None
        finally:
            if progress is not None:
                progress(self.size - last)
            self.close()

    def close(self) -> None:
        self._binary.close()

    def __enter__(self) -> CsvSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# A spreadsheet runs a cell starting with one of these as a formula ("CSV injection"): a
# member's name of `=HYPERLINK(...)` or `+cmd|' /C calc'!A0` would run on the organiser's
# machine when they open a rejects file. OWASP's rule: a single quote before it.
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def spreadsheet_safe(cell: object) -> str:
    """The cell as text a spreadsheet shows rather than runs."""
    text = "" if cell is None else str(cell)
    return "'" + text if text.startswith(_FORMULA_START) else text


def write_csv(path: str | Path, rows: Iterable[Iterable[object]]) -> None:
    """Write rows to a UTF-8 CSV file, whole or not at all, every cell made spreadsheet-safe."""
    path = Path(path)
    make_folder(path.parent)
    with atomic_file(path) as raw, io.TextIOWrapper(raw, encoding="utf-8", newline="") as f:
        csv.writer(f).writerows([spreadsheet_safe(cell) for cell in row] for row in rows)
