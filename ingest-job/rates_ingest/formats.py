"""Parsing and validation of price files: CSV, JSON array, NDJSON, each optionally gzip.

A parser turns the file's raw byte chunks into chunks of CSV for ``COPY prices
(orig_code, dest_code, day, price, source_id) FROM STDIN (FORMAT csv)``. It holds one
chunk at a time, so memory stays bounded whatever the file size. After the first
invalid row it stops producing output, keeps scanning until it has ``MAX_BAD_ROWS``
offending rows (or the end), then raises ``InvalidFile``, which aborts the COPY: an
invalid file never reaches a commit.
"""

import codecs
import csv
import datetime
import json
import re
import sys
import zlib
from dataclasses import dataclass
from typing import Iterable, Iterator

from rates_core.errors import PermanentError

MIN_PRICE, MAX_PRICE = 1, 10_000_000
MAX_BAD_ROWS = 20
FIELDS = ("orig_code", "dest_code", "day", "price")
_FIELD_SET = frozenset(FIELDS)
CSV_HEADER = ",".join(FIELDS).encode()
# A line or JSON element longer than this is malformed; the cap keeps memory bounded.
MAX_RECORD_BYTES = 64 * 1024
# Upper bound on the bytes one gzip step may produce, against decompression bombs.
MAX_INFLATE_BYTES = 1 << 20
# gunzip's input steps (see _slices), and the least it gives the parser at a time.
GUNZIP_INPUT_BYTES = 16 * 1024
GUNZIP_OUTPUT_BYTES = 1 << 20
# The largest file (uncompressed) a Job loads unless INGEST_MAX_FILE_MIB says otherwise:
# twice the 1 GB that a file is expected to reach. This is what bounds a file's cost: every
# byte becomes about as much table and WAL, so without it a small gzip that inflates on and
# on would fill the database before the Job's deadline, and take its whole load to roll back.
DEFAULT_MAX_FILE_BYTES = 2 << 30
# The cheapest bombs are refused early too: no price file compresses this well (CSV sorted by
# lane and day at one price: 11 times; JSON indented by 8 with CRLF: 61; one row over and
# over: 400), so a gzip that does is refused once this much has come out of it.
MAX_GZIP_RATIO = 200
GZIP_RATIO_FROM_BYTES = 64 << 20
_DATE_SHAPE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}\Z")  # ASCII digits: \d takes any script's
_KNOWN_DAYS_CAP = 100_000


class FileRejected(PermanentError):
    """The object is invalid or gone: retrying the same object cannot help."""

    def __init__(self, message: str, bad_rows: list[dict] | None = None):
        super().__init__(message)
        self.bad_rows = bad_rows or []


class InvalidFile(FileRejected):
    """The file's content breaks the format or the validation rules."""


class FileTooLarge(InvalidFile):
    def __init__(self, max_bytes: int, compressed: bool = False):
        what = ("the gzip object is larger than {:,} bytes, and so its content" if compressed
                else "the file is larger than {:,} bytes uncompressed").format(max_bytes)
        super().__init__(f"{what} (INGEST_MAX_FILE_MIB {max_bytes >> 20}): split it into smaller files")


@dataclass(frozen=True)
class Format:
    kind: str  # "csv", "json" or "ndjson"
    gzip: bool

    @property
    def position(self) -> str:
        """What a bad row's position counts: lines, or elements of the JSON array."""
        return "element" if self.kind == "json" else "line"


_EXTENSIONS = {".csv": "csv", ".json": "json", ".ndjson": "ndjson", ".jsonl": "ndjson"}


def detect(key: str) -> Format:
    """The format that the key's extension promises (case-insensitive)."""
    name = key.rsplit("/", 1)[-1].lower()
    compressed = name.endswith(".gz")
    if compressed:
        name = name[:-3]
    for extension, kind in _EXTENSIONS.items():
        if name.endswith(extension):
            return Format(kind, compressed)
    known = ", ".join(sorted(_EXTENSIONS)) + " (each optionally + .gz)"
    raise InvalidFile(f"unknown file extension in key {key!r}; expected one of {known}")


def decoded(chunks: Iterable[bytes], fmt: Format, max_bytes: int = DEFAULT_MAX_FILE_BYTES) -> Iterator[bytes]:
    """The file's bytes, gunzipped if the extension says so, checked against the content;
    more than ``max_bytes`` of them is an invalid file."""
    chunks = iter(chunks)
    first = next((c for c in chunks if c), b"")
    if not first:
        raise InvalidFile("the object is empty (0 bytes)")
    looks_gzip = first[:2] == b"\x1f\x8b"
    if fmt.gzip and not looks_gzip:
        raise InvalidFile("the key ends in .gz but the content is not gzip-compressed")
    if looks_gzip and not fmt.gzip:
        raise InvalidFile("the content is gzip-compressed but the key does not end in .gz")
    stream = _prepend(first, chunks)
    return _capped(_gzipped_once(gunzip(stream)) if fmt.gzip else stream, max_bytes)


def _gzipped_once(inflated: Iterator[bytes]) -> Iterator[bytes]:
    first = next(inflated, b"")
    if first[:2] == b"\x1f\x8b":
        raise InvalidFile("the content is gzip-compressed twice: compress the file once")
    if first:
        yield first
    yield from inflated


def _capped(chunks: Iterator[bytes], max_bytes: int) -> Iterator[bytes]:
    total = 0
    for chunk in chunks:
        total += len(chunk)
        if total > max_bytes:
            raise FileTooLarge(max_bytes)
        yield chunk


def _prepend(first: bytes, rest: Iterator[bytes]) -> Iterator[bytes]:
    yield first
    yield from rest


def gunzip(chunks: Iterable[bytes]) -> Iterator[bytes]:
    """Inflate a (possibly multi-member) gzip stream in bounded steps, in pieces of at
    least GUNZIP_OUTPUT_BYTES (but the last)."""
    pieces: list[bytes] = []
    size = 0
    for out in _inflate(_slices(chunks, GUNZIP_INPUT_BYTES)):
        pieces.append(out)
        size += len(out)
        if size >= GUNZIP_OUTPUT_BYTES:
            yield b"".join(pieces)
            pieces, size = [], 0
    if pieces:
        yield b"".join(pieces)


def _slices(chunks: Iterable[bytes], size: int) -> Iterator[bytes]:
    # At the end of each gzip member zlib copies the rest of its input into unused_data,
    # which the next member's inflater then takes: with whole 1 MiB downloads, a file of
    # many small members (appended with `gzip >>`, a row each) was copied a MiB a member.
    for chunk in chunks:
        for start in range(0, len(chunk), size):
            yield chunk[start:start + size]


def _inflate(chunks: Iterable[bytes]) -> Iterator[bytes]:
    inflater = zlib.decompressobj(wbits=31)
    padded = False
    taken = given = 0
    try:
        for data in chunks:
            taken += len(data)
            while True:
                if padded:
                    _zero_padding(data)
                    break
                out = inflater.decompress(data, MAX_INFLATE_BYTES)
                given += len(out)
                if given > GZIP_RATIO_FROM_BYTES and given > MAX_GZIP_RATIO * taken:
                    raise InvalidFile(f"the gzip stream inflates more than {MAX_GZIP_RATIO} times ({given:,} bytes "
                                      f"from {taken:,}): no file of prices compresses that well")
                if out:
                    yield out
                if inflater.eof:
                    # Concatenated gzip members are one valid file (gzip -c a b > c).
                    data = inflater.unused_data
                    if not data:
                        break
                    # Zeros after a member pad it to a block (tape, some uploaders); gzip(1)
                    # ignores them, and no member starts with one.
                    padded = data.startswith(b"\0")
                    if not padded:
                        # Anything else must be another member; a stray byte or two (a newline
                        # an uploader added) would otherwise read as a member cut short.
                        if not _GZIP_MAGIC.startswith(data[:2]):
                            raise InvalidFile(f"the gzip stream has data after its end that starts no gzip "
                                              f"member (it starts {_shown(data[:8].decode('utf-8', 'backslashreplace'))})")
                        inflater = zlib.decompressobj(wbits=31)
                    continue
                data = inflater.unconsumed_tail
                # A full step may leave output inside zlib even when all input is used.
                if not data and len(out) < MAX_INFLATE_BYTES:
                    break
        if not inflater.eof:
            raise InvalidFile("the gzip stream is truncated (it ends before its end marker)")
    except zlib.error as exc:
        raise InvalidFile(f"the content is not valid gzip: {exc}") from None


_GZIP_MAGIC = b"\x1f\x8b"


def _zero_padding(data: bytes) -> None:
    if data.strip(b"\0"):
        raise InvalidFile("the gzip stream has data after the zero bytes that pad its end")


class Problems:
    """The first offending rows of a file, with their positions."""

    def __init__(self, position: str, limit: int = MAX_BAD_ROWS):
        self.position = position
        self.limit = limit
        self.rows: list[dict] = []

    def add(self, where: int, error: str, text: bytes | str | None) -> None:
        if len(self.rows) < self.limit:
            if isinstance(text, bytes):
                text = text.decode("utf-8", "backslashreplace")
            self.rows.append({self.position: where, "error": error, "text": (text or "")[:200]})

    @property
    def full(self) -> bool:
        return len(self.rows) >= self.limit

    def __bool__(self) -> bool:
        return bool(self.rows)

    def raise_if_any(self, stopped_early: bool) -> None:
        if not self.rows:
            return
        first = self.rows[0]
        count = f"at least {len(self.rows)}" if stopped_early else str(len(self.rows))
        raise InvalidFile(f"{count} invalid row(s); the first at {self.position} "
                          f"{first[self.position]}: {first['error']}", self.rows)


class Rules:
    """The checks every row must pass, whatever the format."""

    def __init__(self, known_codes: Iterable[str]):
        self.codes = frozenset(known_codes)
        # The CSV fast path passes lines to COPY as they are, so it may only accept codes
        # that COPY reads back unchanged; any other code takes the slow path, which quotes it.
        self.code_bytes = frozenset(c.encode() for c in self.codes if _csv_field(c) == c)
        # Days repeat across rows: a set of days already seen to be valid saves a parse.
        self.day_bytes: set[bytes] = set()

    def day_ok(self, day: str) -> bool:
        if not _DATE_SHAPE.match(day):
            return False
        try:
            datetime.date.fromisoformat(day)
        except ValueError:
            return False
        if len(self.day_bytes) >= _KNOWN_DAYS_CAP:
            self.day_bytes.clear()
        self.day_bytes.add(day.encode())
        return True

    def error(self, orig, dest, day, price) -> str | None:
        """Why a row's four values are invalid, or None. Values are as parsed (str/int)."""
        for name, code in (("orig_code", orig), ("dest_code", dest)):
            if not isinstance(code, str):
                return f"{name} must be a string"
            if code not in self.codes:
                return f"{name} is empty" if not code else f"unknown port code {_shown(code)} in {name}"
        if not isinstance(day, str) or not self.day_ok(day):
            if isinstance(day, str) and _DATE_SHAPE.match(day):
                return f"day {day!r} is not a date of the calendar"
            return f"day must be a date written YYYY-MM-DD, got {_shown(day)}"
        if isinstance(price, str):
            if not (price.isascii() and price.isdigit()):
                return f"price must be a whole number, got {_shown(price)}"
            digits = price.lstrip("0")
            if len(digits) > len(str(MAX_PRICE)):
                # int() of a very long string raises ValueError (CPython's 4300-digit limit).
                return f"price must be between {MIN_PRICE} and {MAX_PRICE}, got {_shorten(price)}"
            price = int(digits or "0")
        if isinstance(price, float):
            return f"price must be an integer, written without a fraction or exponent, got {_shown(price)}"
        if isinstance(price, bool) or not isinstance(price, int):
            return f"price must be a whole number, got {_shown(price)}"
        if not MIN_PRICE <= price <= MAX_PRICE:
            return f"price must be between {MIN_PRICE} and {MAX_PRICE}, got {price}"
        return None


def _shorten(text: str, limit: int = 40) -> str:
    return text if len(text) <= limit else f"{text[:limit]}… ({len(text)} characters)"


def _shown(value, limit: int = 40) -> str:
    """A value quoted in an error: a string as Python quotes it, a JSON value as the file
    spells it (true, null), and never more than about ``limit`` characters, because the
    controller quotes the error from the log's last 2 KiB when it sets the file aside."""
    return _shorten(repr(value) if isinstance(value, str) else json.dumps(value), limit)


def _listed(names: list[str], limit: int = 5) -> str:
    shown = ", ".join(_shown(name) for name in names[:limit])
    return shown + (f", and {len(names) - limit} more" if len(names) > limit else "")


def _csv_field(value: str) -> str:
    # Port codes come from the ports table and could, in principle, need quoting.
    if any(c in value for c in ',"\r\n') or not value:
        return '"' + value.replace('"', '""') + '"'
    return value


class Parser:
    """Base of the three parsers: counts rows, collects problems, tags rows with source_id."""

    def __init__(self, fmt: Format, rules: Rules, source_id: int, max_bytes: int = DEFAULT_MAX_FILE_BYTES):
        self.fmt = fmt
        self.rules = rules
        self.max_bytes = max_bytes
        self.rows = 0
        self.problems = Problems(fmt.position)
        self.suffix = f",{int(source_id)}\n"
        self.suffix_bytes = self.suffix.encode()

    def copy_chunks(self, chunks: Iterable[bytes]) -> Iterator[bytes]:
        """CSV chunks for COPY; raises InvalidFile (after the last chunk) if the file is bad."""
        try:
            for out in self._parse(self._refuse_utf16(decoded(chunks, self.fmt, self.max_bytes))):
                if out and not self.problems:
                    yield out
                if self.problems.full:
                    break
        except FileTooLarge:
            # Rows found bad on the way say more: split, the file would still be refused.
            self.problems.raise_if_any(stopped_early=True)
            raise
        self.problems.raise_if_any(stopped_early=self.problems.full)
        if self.rows == 0:
            raise InvalidFile("the file has no price rows")

    def _parse(self, data: Iterator[bytes]) -> Iterator[bytes]:
        raise NotImplementedError

    def _refuse_utf16(self, data: Iterator[bytes]) -> Iterator[bytes]:
        """The data, unless it starts with a UTF-16 (or UTF-32) byte order mark."""
        data = iter(data)
        for chunk in data:
            if not chunk:
                continue
            # (UTF-32 LE starts with UTF-16 LE's mark.)
            marked = chunk.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE, codecs.BOM_UTF32_BE))
            # Without a mark (.NET's Encoding.Unicode without its preamble, bcp -w): the NULs
            # of ASCII characters. No header or JSON opening has a NUL among its first bytes.
            unmarked = len(chunk) >= 4 and (chunk[1] == chunk[3] == 0 or chunk[0] == chunk[2] == 0)
            if chunk.startswith(b"\0\0\0\0"):  # no text in any encoding: a zero-filled or broken upload
                self.problems.add(0 if self.fmt.position == "element" else 1,
                                  "the file starts with NUL bytes, not text (zero-filled or corrupt?); upload it "
                                  "again", None)
                self.problems.raise_if_any(stopped_early=False)
            if marked or unmarked:
                # Spreadsheets save "Unicode text" this way; every other error would be a symptom.
                how = "it starts with a byte order mark" if marked else "NUL bytes between its first characters"
                self.problems.add(0 if self.fmt.position == "element" else 1,
                                  f"the file is UTF-16 or UTF-32 ({how}); save it as UTF-8", None)
                self.problems.raise_if_any(stopped_early=False)  # now: a parser would add symptoms
            yield chunk
            break
        yield from data

    def _object_line(self, where: int, obj, text) -> str | None:
        """The COPY line for one JSON object, or None after recording why it is invalid."""
        if isinstance(obj, _RepeatedKeys):
            self.problems.add(where, f"the object names {_listed(obj.keys)} more than once", text)
            return None
        if not isinstance(obj, dict):
            found = _JSON_KINDS.get(type(obj), "a value")
            hint = ("; a file that is one JSON array of objects is JSON: name it .json"
                    if isinstance(obj, list) and obj and isinstance(obj[0], dict) and isinstance(self, NdjsonParser)
                    else "")
            self.problems.add(where, f"expected a JSON object, got {found}{hint}", text)
            return None
        if obj.keys() != _FIELD_SET:
            missing = [f for f in FIELDS if f not in obj]
            extra = sorted(k for k in obj if k not in FIELDS)
            self.problems.add(where, f"expected exactly the keys {', '.join(FIELDS)}; "
                                     f"missing [{_listed(missing)}], unexpected [{_listed(extra)}]", text)
            return None
        orig, dest, day, price = (obj[f] for f in FIELDS)
        # Rules.error accepts digit strings, which is what CSV fields are; JSON says what
        # it means, so a quoted price is a mistake in the file, not a number.
        error = ("price must be a JSON number, not a string" if isinstance(price, str)
                 else self.rules.error(orig, dest, day, price))
        if error:
            self.problems.add(where, error, text)
            return None
        return f"{_csv_field(orig)},{_csv_field(dest)},{day},{int(price)}"

    def _lines_out(self, lines: list[str]) -> bytes:
        self.rows += len(lines)
        return (self.suffix.join(lines) + self.suffix).encode() if lines else b""


class _RepeatedKeys:
    """A decoded JSON object that names a key more than once (json would keep the last)."""

    def __init__(self, keys: list[str]):
        self.keys = keys


def _json_object(pairs: list[tuple]) -> dict | _RepeatedKeys:
    obj = dict(pairs)
    if len(obj) == len(pairs):
        return obj
    seen: set = set()
    return _RepeatedKeys(sorted({k for k, _ in pairs if k in seen or seen.add(k)}))


def parser_for(fmt: Format, rules: Rules, source_id: int, max_bytes: int = DEFAULT_MAX_FILE_BYTES) -> Parser:
    kind = {"csv": CsvParser, "json": JsonArrayParser, "ndjson": NdjsonParser}[fmt.kind]
    return kind(fmt, rules, source_id, max_bytes)


_LINE_TOO_LONG = f"line longer than {MAX_RECORD_BYTES} bytes"
_CR_ADVICE = ("; it holds a CR (\\r) that ends no CRLF, as the lone CR line ends of old Mac spreadsheets do: "
              "save it with LF or CRLF line ends")


def _complete_lines(data: Iterator[bytes], problems: Problems) -> Iterator[tuple[int, list[bytes]]]:
    """(number of the first line, the whole lines that arrived, without line ends), chunk by chunk.

    A line over MAX_RECORD_BYTES is a problem that ends the file. Every line is measured,
    not only one still waiting for its end, so the verdict does not depend on where the
    chunks split.
    """
    pending = b""
    line_no = 1
    for chunk in data:
        pending += chunk
        cut = pending.rfind(b"\n") + 1
        if not cut:
            # A final \r may be half of a CRLF, which the measure of whole lines leaves out.
            if len(pending) - pending.endswith(b"\r") > MAX_RECORD_BYTES:
                problems.add(line_no, _too_long(pending), pending[:200])
                return
            continue
        lines = _split_lines(pending[:cut])
        pending = pending[cut:]
        count = len(lines)  # counted first: the consumer may trim the list
        if not (yield from _within_limit(line_no, lines, problems)):
            return
        line_no += count
    if pending:
        yield from _within_limit(line_no, _split_lines(pending + b"\n"), problems)


def _split_lines(body: bytes) -> list[bytes]:
    if b"\r" in body:
        body = body.replace(b"\r\n", b"\n")
    lines = body.split(b"\n")
    lines.pop()  # body ends with a line end
    return lines


def _within_limit(line_no: int, lines: list[bytes], problems: Problems):
    """Yield (line_no, lines) up to the first line over the limit; False if there was one."""
    if not lines or max(map(len, lines)) <= MAX_RECORD_BYTES:
        yield line_no, lines
        return True
    long_at = next(i for i, line in enumerate(lines) if len(line) > MAX_RECORD_BYTES)
    if long_at:  # the lines before it first, so that problems stay in file order
        yield line_no, lines[:long_at]
    problems.add(line_no + long_at, _too_long(lines[long_at]), lines[long_at][:200])
    return False


def _too_long(line: bytes) -> str:
    # Old Mac spreadsheets end lines in a lone CR: the whole file is then one line.
    return _LINE_TOO_LONG + (_CR_ADVICE if b"\r" in line[:MAX_RECORD_BYTES] else "")


def _blank_run_end(lines: list[bytes], start: int) -> int:
    """Index of the first line from ``start`` on that is not blank, or len(lines). Looks
    at the run's lines only, so that many short runs cost no more than one long one."""
    end, count = start, len(lines)
    while end < count and not lines[end].strip():
        end += 1
    return end


class CsvParser(Parser):
    """CSV with the header orig_code,dest_code,day,price (UTF-8, an optional BOM, LF or CRLF).

    Most lines take a fast path that checks the raw bytes and passes them through; a line
    that fails it is parsed properly (quoting, UTF-8) to accept it or say what is wrong.
    """

    def _parse(self, data: Iterator[bytes]) -> Iterator[bytes]:
        header_seen = False
        for first_no, lines in _complete_lines(data, self.problems):
            if not header_seen:
                header_seen = True
                if not self._header_ok(lines[0]):
                    return
                del lines[0]
                first_no += 1
            yield self._chunk(lines, first_no)

    def _header_ok(self, line: bytes) -> bool:
        # Quoted names are the same header: R, PowerShell and "quote all" exports write them.
        if _header_fields(line.removeprefix(codecs.BOM_UTF8)) == FIELDS:
            return True
        found = line.decode("utf-8", "backslashreplace")
        why = _header_advice(line.removeprefix(codecs.BOM_UTF8)) + (_CR_ADVICE if b"\r" in line else "")
        self.problems.add(1, f"the first line must be the header {CSV_HEADER.decode()}, got {_shown(found, 60)}{why}",
                          line)
        return False

    def _chunk(self, lines: list[bytes], first_no: int) -> bytes:
        bad = self._first_bad(lines, 0)
        if bad < 0:
            self.rows += len(lines)
            return self.suffix_bytes.join(lines) + self.suffix_bytes if lines else b""
        kept = lines[:bad]
        while bad >= 0 and not self.problems.full:
            if lines[bad].strip():
                line = self._slow_line(first_no + bad, lines[bad])
                if line is not None:
                    kept.append(line)
                resume = bad + 1
            else:
                # A run of blank lines, passed over in one loop: one by one through the slow
                # path they took a second a MiB, and a gzip of newlines is a thousandth of it.
                resume = _blank_run_end(lines, bad)
            after = self._first_bad(lines, resume)
            kept.extend(lines[resume:] if after < 0 else lines[resume:after])
            bad = after
        self.rows += len(kept)
        return self.suffix_bytes.join(kept) + self.suffix_bytes if kept else b""

    def _first_bad(self, lines: list[bytes], start: int) -> int:
        """Index of the first line that is not plainly valid, or -1. The hot loop."""
        codes, days = self.rules.code_bytes, self.rules.day_bytes
        for i in range(start, len(lines)):
            fields = lines[i].split(b",")
            if len(fields) != 4 or fields[0] not in codes or fields[1] not in codes or fields[2] not in days:
                return i
            price = fields[3]
            # Same-length digit strings compare like numbers; a leading 0 goes the slow way.
            if not (price.isdigit() and price[0] != 48
                    and (len(price) < 8 or (len(price) == 8 and price <= b"10000000"))):
                return i
        return -1

    def _slow_line(self, line_no: int, line: bytes) -> bytes | None:
        """The canonical COPY line, or None for a blank line or after recording a problem."""
        if not line.strip():
            return None
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError as exc:
            self.problems.add(line_no, f"not valid UTF-8 (byte {line[exc.start]:#04x} at column {exc.start + 1})", line)
            return None
        if "\r" in text:
            # csv.reader would take a final CR for the line's end and drop it, where a line
            # without quotes keeps it in its last field: the same row, two verdicts.
            self.problems.add(line_no, "a CR (\\r) that ends no CRLF" + _CR_ADVICE.split("ends no CRLF", 1)[1], line)
            return None
        try:
            fields = next(csv.reader([text], strict=True)) if '"' in text else text.split(",")
        except csv.Error as exc:
            # One line, strict, no escape character: csv says this only when the line ends
            # inside quotes, and would not say why.
            if str(exc) == "unexpected end of data":
                exc = "a quoted field not closed on its line (a line break inside quotes is not supported)"
            self.problems.add(line_no, f"malformed CSV: {exc}", line)
            return None
        if len(fields) != len(FIELDS):
            self.problems.add(line_no, f"expected {len(FIELDS)} fields ({','.join(FIELDS)}), got {len(fields)}", line)
            return None
        error = _misplaced_row(fields) or self.rules.error(*fields)
        if error:
            self.problems.add(line_no, error, line)
            return None
        orig, dest, day, price = fields
        return f"{_csv_field(orig)},{_csv_field(dest)},{day},{int(price.lstrip('0'))}".encode()


# An object whose first value opens an object or an array: {"key": { or {"key": [
_FIRST_VALUE = re.compile(r'\{\s*"(?:[^"\\]|\\.)*"\s*:\s*([\[{])')


def _object_hint(text: str, pos: int) -> str:
    """What a .json file that opens with an object (not an array) most likely is, as advice.

    Told from the first line and the opening bytes only: the first object may be the whole
    file, larger than the buffer (or nested too deep to decode)."""
    line_end = text.find("\n", pos)
    try:
        first_line = json.loads(text[pos:line_end]) if 0 <= line_end - pos <= MAX_RECORD_BYTES else None
    except (ValueError, RecursionError):
        first_line = None
    if isinstance(first_line, dict) and text[line_end:].strip():
        return "; a file of one object per line is NDJSON: name it .ndjson"
    opening = _FIRST_VALUE.match(text, pos, pos + 4096)
    if opening and opening.group(1) == "{":
        return ("; an object of columns, as pandas' to_json writes by default: write "
                "to_json(orient='records') for an array of objects")
    if opening:
        return "; the array of prices must be the whole file, not a value inside an object"
    return ("; objects one after another: put them in one array ([{...}, {...}]), or write one per line "
            "(jq -c) and name the file .ndjson")


_JSON_KINDS = {list: "an array", str: "a string", int: "a number", float: "a number", bool: "true or false",
               type(None): "null"}


def _misplaced_row(fields: list[str]) -> str | None:
    """What a row that is no price is, when a spreadsheet or a concatenation put it there."""
    if not any(fields):
        return "a row of empty cells (a spreadsheet's): delete it"
    if [fields[0].removeprefix("\ufeff"), *fields[1:]] == list(FIELDS):
        return "the header again (files joined together?): keep only the first line's"
    return None


def _header_fields(line: bytes, separator: str = ",") -> tuple[str, ...] | None:
    """The field names of a CSV header line, quoted or not; None if it is no CSV line."""
    if line == CSV_HEADER and separator == ",":
        return FIELDS
    if b"\r" in line:  # csv.reader would take a CR for a line end, and the rows' CRs stay
        return None
    try:
        return tuple(next(csv.reader([line.decode("utf-8")], delimiter=separator, strict=True)))
    except (UnicodeDecodeError, csv.Error, StopIteration):
        return None


# What pandas names an index column that it read back from a CSV and saved again.
_PANDAS_INDEX_NAMES = ("", "Unnamed: 0")


def _header_advice(line: bytes) -> str:
    """Why a header naming the right columns is refused, when a tool's default wrote it so:
    a spreadsheet in a decimal-comma locale separates with ";", and pandas' to_csv writes
    its index first, under no name. The plain "must be the header" named neither."""
    for separator in ",;\t":
        names = _header_fields(line, separator) or ()
        index = names[:1] != () and names[0] in _PANDAS_INDEX_NAMES
        if (names[1:] if index else names) != FIELDS:
            continue
        reasons = [f"the separator must be a comma, not {separator!r}"] if separator != "," else []
        if index:
            reasons.append("its first column looks like a saved pandas index (to_csv's default): "
                           "save with to_csv(index=False)")
        return ": " + ", and ".join(reasons)
    return ""


_WHITESPACE = re.compile(r"[ \t\n\r]*")
_TOO_LONG = f"element longer than {MAX_RECORD_BYTES} characters"


class JsonArrayParser(Parser):
    """A JSON array of objects, decoded element by element with bounded lookahead."""

    def _parse(self, data: Iterator[bytes]) -> Iterator[bytes]:
        utf8 = codecs.getincrementaldecoder("utf-8")()
        self._text, self._pos, self._state, self._index = "", 0, "open", 0
        self._decode = json.JSONDecoder(object_pairs_hook=_json_object).raw_decode
        try:
            for chunk in data:
                self._text = self._text[self._pos:] + utf8.decode(chunk)
                self._pos = 0
                yield self._lines_out(self._scan(final=False))
                if self._state == "broken":
                    return
            self._text = self._text[self._pos:] + utf8.decode(b"", final=True)
            self._pos = 0
        except UnicodeDecodeError as exc:
            yield self._lines_out(self._bad_utf8(exc))
            return
        yield self._lines_out(self._scan(final=True))
        if self._state == "open":
            self.problems.add(0, "the file holds no JSON array", self._text[-200:])
        elif self._state not in ("done", "broken"):
            self.problems.add(self._index, "the JSON array is not closed (truncated file?)", self._text[-200:])

    def _bad_utf8(self, exc: UnicodeDecodeError) -> list[str]:
        """Scan the elements before the bad byte, then report it at the element that holds it."""
        # exc.object is what the decoder held plus the new chunk; all of it before exc.start is valid.
        self._text = self._text[self._pos:] + exc.object[:exc.start].decode("utf-8")
        self._pos = 0
        out = self._scan(final=False)
        if self._state != "broken" and not self.problems.full:
            self.problems.add(self._index, f"not valid UTF-8 (byte {exc.object[exc.start]:#04x})",
                              self._text[self._pos:self._pos + 200])
        self._state = "broken"
        return out

    def _scan(self, final: bool) -> list[str]:
        """Consume whole elements from the buffer; returns their COPY lines."""
        out, text = [], self._text
        while self._state != "broken":
            pos = _WHITESPACE.match(text, self._pos).end()
            if self._state == "open" and text.startswith("\ufeff", pos):
                pos = _WHITESPACE.match(text, pos + 1).end()  # an editor's BOM, then a newline
            self._pos = pos
            if pos >= len(text):
                return out
            if self._state == "value":
                if not self._value(text, final, out):
                    return out
                continue
            self._punctuation(text[pos])
        return out

    _TRANSITIONS = {("open", "["): "first", ("first", "]"): "done", ("sep", ","): "value", ("sep", "]"): "done"}
    _EXPECTED = {"open": "'['", "sep": "',' or ']'", "done": "the end of the file"}

    def _punctuation(self, char: str) -> None:
        if self._state == "first" and char != "]":
            self._state = "value"
            return
        after = self._TRANSITIONS.get((self._state, char))
        if after is None:
            hint = _object_hint(self._text, self._pos) if self._state == "open" and char == "{" else ""
            self.problems.add(self._index, f"malformed JSON array: expected {self._EXPECTED[self._state]}, "
                                           f"got {char!r}{hint}", self._text[self._pos:self._pos + 200])
            self._state = "broken"
            return
        self._pos += 1
        self._state = after

    def _value(self, text: str, final: bool, out: list[str]) -> bool:
        """Decode one element; False when the buffer holds only part of it."""
        try:
            obj, end = self._decode(text, self._pos)
        except (ValueError, RecursionError) as exc:
            if not isinstance(exc, json.JSONDecodeError):
                self.problems.add(self._index, _undecodable(exc), text[self._pos:self._pos + 200])
                self._state = "broken"
                return False
            if not final and len(text) - self._pos <= MAX_RECORD_BYTES:
                return False  # the element may go on in the next chunk
            # Ran out of text (an open string runs to the end of it, too): the element is
            # longer than the buffer, which holds more than the limit unless at the end.
            ended = exc.pos >= len(text.rstrip()) or exc.msg.startswith("Unterminated string")
            if ended and not final:
                error = _TOO_LONG
            elif ended:
                error = "the file ends inside this element (truncated?)"
            else:
                error = f"malformed JSON: {exc.msg}"
            self.problems.add(self._index, error, text[self._pos:self._pos + 200])
            self._state = "broken"
            return False
        if end - self._pos > MAX_RECORD_BYTES:
            # Judged on the element itself, so that the verdict does not depend on chunking.
            self.problems.add(self._index, _TOO_LONG, text[self._pos:self._pos + 200])
            self._state = "broken"
            return False
        line = self._object_line(self._index, obj, text[self._pos:end])
        if line is not None:
            out.append(line)
        self._index += 1
        self._pos, self._state = end, "sep"
        return not self.problems.full


def _undecodable(exc: BaseException) -> str:
    """What json could not decode that is still valid JSON: too long a number, too deep a nesting."""
    if isinstance(exc, RecursionError):
        return "malformed JSON: nested too deeply"
    return f"malformed JSON: a number longer than {sys.get_int_max_str_digits()} digits"


class NdjsonParser(Parser):
    """One JSON object per line (.ndjson, .jsonl); blank lines are ignored."""

    def _parse(self, data: Iterator[bytes]) -> Iterator[bytes]:
        # One decoder for the file: json.loads with a hook would build one for every line.
        self._decode = json.JSONDecoder(object_pairs_hook=_json_object).decode
        for first_no, lines in _complete_lines(data, self.problems):
            out = []
            for offset, raw in enumerate(lines):
                if not raw.strip():
                    continue  # blank, without the call (a BOM-only first line goes on to it)
                line = self._line(first_no + offset, raw)
                if line is not None:
                    out.append(line)
                if self.problems.full:
                    break
            yield self._lines_out(out)

    def _line(self, line_no: int, raw: bytes) -> str | None:
        if line_no == 1:
            raw = raw.removeprefix(codecs.BOM_UTF8)
        if not raw.strip():
            return None
        try:
            obj = self._decode(raw.decode("utf-8"))
        except UnicodeDecodeError as exc:
            self.problems.add(line_no, f"not valid UTF-8 (byte {raw[exc.start]:#04x} at column {exc.start + 1})", raw)
            return None
        except json.JSONDecodeError as exc:
            self.problems.add(line_no, f"malformed JSON: {exc.msg}", raw)
            return None
        except (ValueError, RecursionError) as exc:
            self.problems.add(line_no, _undecodable(exc), raw)
            return None
        return self._object_line(line_no, obj, raw)
