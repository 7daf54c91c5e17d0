"""The parsers on their own: chunk boundaries anywhere, gzip members, bounded output."""

import csv
import datetime
import gzip
import io
import json

import pytest

from rates_ingest import formats
from tests.ingest.conftest import ROWS, as_csv, as_json, as_ndjson

PORTS = {"CNSHA", "NLRTM", "CNNGB", "DEHAM", "HKHKG", "NOOSL", "ÅLAND", 'QU"OT,E'}
EXPECTED = b"".join(f"{o},{d},{day},{p},7\n".encode() for o, d, day, p in ROWS)


def split(data: bytes, size: int) -> list[bytes]:
    return [data[i:i + size] for i in range(0, len(data), size)]


def parse(kind: str, chunks, gz=False) -> bytes:
    parser = formats.parser_for(formats.Format(kind, gz), formats.Rules(PORTS), source_id=7)
    return b"".join(parser.copy_chunks(iter(chunks)))


@pytest.mark.parametrize("size", [1, 3, 7, 64, 10_000])
@pytest.mark.parametrize("kind, encoder", [("csv", as_csv), ("json", as_json), ("ndjson", as_ndjson)])
def test_any_chunking_gives_the_same_rows(kind, encoder, size):
    assert parse(kind, split(encoder(ROWS), size)) == EXPECTED


@pytest.mark.parametrize("size", [1, 5, 1000])
def test_multibyte_characters_split_across_chunks(size):
    rows = [("ÅLAND", "CNSHA", "2016-01-01", 5)]
    expected = "ÅLAND,CNSHA,2016-01-01,5,7\n".encode()
    assert parse("csv", split(as_csv(rows), size)) == expected
    assert parse("json", split(json.dumps([dict(zip(formats.FIELDS, rows[0]))], ensure_ascii=False).encode(),
                               size)) == expected


def test_port_codes_that_need_quoting_are_quoted_for_copy():
    body = json.dumps([{"orig_code": 'QU"OT,E', "dest_code": "CNSHA", "day": "2016-01-01", "price": 5}]).encode()
    assert parse("json", [body]) == b'"QU""OT,E",CNSHA,2016-01-01,5,7\n'


def test_csv_codes_that_copy_would_misread_are_quoted_even_on_the_fast_path():
    rules = formats.Rules(PORTS | {"", 'QU"OTE'})
    # The first row puts its day in the cache of valid days, which the fast path relies on.
    body = as_csv([ROWS[0]]) + b',CNSHA,2016-01-01,5\n"QU""OTE",CNSHA,2016-01-01,6\n'
    parser = formats.parser_for(formats.Format("csv", False), rules, source_id=7)
    assert b"".join(parser.copy_chunks([body])).splitlines()[1:] == [
        b'"",CNSHA,2016-01-01,5,7', b'"QU""OTE",CNSHA,2016-01-01,6,7']


def test_a_price_with_thousands_of_leading_zeros_is_its_value():
    body = b"orig_code,dest_code,day,price\nCNSHA,NLRTM,2016-01-01," + b"0" * 5000 + b"12\n"
    assert parse("csv", [body]) == b"CNSHA,NLRTM,2016-01-01,12,7\n"


def _long_element(kind: str) -> bytes:
    good = dict(zip(formats.FIELDS, ROWS[0]))
    long = {**good, "note": "x" * (formats.MAX_RECORD_BYTES + 5000)}
    if kind == "json":
        return json.dumps([good, long, good]).encode()
    return (json.dumps(good) + "\n" + json.dumps(long) + "\n" + json.dumps(good) + "\n").encode()


@pytest.mark.parametrize("size", [1000, formats.MAX_RECORD_BYTES + 2000, 1 << 20])
@pytest.mark.parametrize("kind", ["json", "ndjson"])
def test_a_record_over_the_limit_is_rejected_wherever_the_chunks_split(kind, size):
    with pytest.raises(formats.InvalidFile, match="longer than") as caught:
        parse(kind, split(_long_element(kind), size))
    assert caught.value.bad_rows[0][formats.Format(kind, False).position] == 1 + (kind == "ndjson")


@pytest.mark.parametrize("size", [7, 100, 1 << 20])
def test_bad_utf8_in_a_json_array_is_reported_at_its_element(size):
    elements = [dict(zip(formats.FIELDS, ROWS[0]))] * 6
    elements[2] = {**elements[2], "orig_code": "XXXXX"}
    body = json.dumps(elements).encode()
    at = [i for i in range(len(body)) if body.startswith(b"NLRTM", i)][4]
    with pytest.raises(formats.InvalidFile) as caught:
        parse("json", split(body[:at] + b"\xff" + body[at + 1:], size))
    assert [(row["element"], row["error"][:19]) for row in caught.value.bad_rows] == [
        (2, "unknown port code '"), (4, "not valid UTF-8 (by")]


@pytest.mark.parametrize("size", [3, 1000, 1 << 20])
@pytest.mark.parametrize("kind, encoder", [("csv", as_csv), ("ndjson", as_ndjson)])
def test_runs_of_blank_lines_are_skipped_and_lines_still_counted(kind, encoder, size):
    body = encoder(ROWS)
    first = body.index(b"\n") + 1  # after the header (CSV) or the first row (NDJSON)
    blanks = b"\n" * 300_000 + b"  \n" + b"\r\n" * 5
    padded = body[:first] + blanks + body[first:] + b"\n" * 70_000
    assert parse(kind, split(padded, size)) == EXPECTED

    bad = encoder([("CNSHA", "XXXXX", "2016-01-01", 5)]).splitlines()[-1] + b"\n"
    with pytest.raises(formats.InvalidFile) as caught:
        parse(kind, split(padded + bad, size))
    # one header or row, the 300,006 blank lines, the other rows and the 70,000 blank lines
    assert caught.value.bad_rows[0]["line"] == 1 + 300_006 + (len(ROWS) + (kind == "csv") - 1) + 70_000 + 1

    # Double-spaced, with blank lines of spaces, tabs and a lone CR between the rows.
    header = body[:first] if kind == "csv" else b""
    rows = body[len(header):].splitlines(keepends=True)
    spaced = header + b"".join(row + b"\n \t\n\r\r\n" for row in rows * 2000)
    assert parse(kind, split(spaced, size)) == EXPECTED * 2000


def test_a_run_of_blank_lines_is_read_once():
    """Only the run's own lines and the one after it: many short runs in a chunk must cost
    no more than one long one (a scan from the chunk's start each time was quadratic)."""
    seen = []

    class Lines(list):
        def __getitem__(self, index):
            seen.append(index)
            return super().__getitem__(index)

    lines = Lines([b"a", b"", b"", b" \t", b"\r", b"b", b""] + [b"x", b""] * 1000)
    assert formats._blank_run_end(lines, 1) == 5 and seen == [1, 2, 3, 4, 5]
    seen.clear()
    assert formats._blank_run_end(lines, 6) == 7 and seen == [6, 7]
    seen.clear()
    assert formats._blank_run_end(lines, len(lines) - 1) == len(lines) and seen == [len(lines) - 1]


def test_concatenated_gzip_members_are_one_file():
    body = as_csv(ROWS)
    cut = body.index(b"\n", 40) + 1
    assert parse("csv", split(gzip.compress(body[:cut]) + gzip.compress(body[cut:]), 5), gz=True) == EXPECTED


@pytest.mark.parametrize("size", [5, 100, 1 << 20])
def test_zeros_padding_a_gzip_stream_are_ignored_as_gzip_does(size):
    # Python's gzip module reads it the same way; the padding may start in its own chunk.
    body = as_csv(ROWS)
    padded = gzip.compress(body) + b"\0" * 1000
    assert gzip.decompress(padded) == body
    assert parse("csv", split(padded, size), gz=True) == EXPECTED


def test_gunzip_output_comes_in_bounded_steps():
    gz = gzip.compress(b"0" * (50 * formats.MAX_INFLATE_BYTES), 9)
    assert len(gz) < 100_000  # a small object that inflates to 50 MiB
    sizes = [len(out) for out in formats.gunzip([gz])]
    assert max(sizes) < formats.GUNZIP_OUTPUT_BYTES + formats.MAX_INFLATE_BYTES
    assert sum(sizes) == 50 * formats.MAX_INFLATE_BYTES


def test_a_gzip_of_many_small_members_inflates_in_time_linear_in_its_size():
    # `echo "$row" | gzip >> prices.csv.gz` makes a member a row. Each member's end used to
    # copy the rest of its 1 MiB download: 20,000 members took 20 GB of copying.
    member = gzip.compress(b"CNSHA,NLRTM,2016-01-01,1200\n")
    out = formats.gunzip([member * 20_000])
    # Counted in bytes handed to zlib, not timed: each input slice once, plus what a member's
    # end leaves of its slice, at most GUNZIP_INPUT_BYTES a member.
    fed = []
    real = formats._inflate
    formats._inflate = lambda chunks: real(fed.append(len(c)) or c for c in chunks)
    try:
        assert b"".join(out) == b"CNSHA,NLRTM,2016-01-01,1200\n" * 20_000
    finally:
        formats._inflate = real
    assert max(fed) <= formats.GUNZIP_INPUT_BYTES


def test_an_endless_line_is_rejected_without_being_held():
    with pytest.raises(formats.InvalidFile, match="longer than"):
        parse("csv", [b"orig_code,dest_code,day,price\n"] + [b"x" * 4096] * 100)


@pytest.mark.parametrize("key, expected", [
    ("a/b/prices.CSV", formats.Format("csv", False)),
    ("prices.json.GZ", formats.Format("json", True)),
    ("x.jsonl", formats.Format("ndjson", False)),
    ("x.ndjson.gz", formats.Format("ndjson", True)),
])
def test_format_detection(key, expected):
    assert formats.detect(key) == expected


@pytest.mark.parametrize("key", ["prices", "prices.csv.zip", "prices.gz", "csv", "dir.csv/prices.txt"])
def test_unknown_extensions_are_rejected(key):
    with pytest.raises(formats.InvalidFile, match="unknown file extension"):
        formats.detect(key)


def test_a_crlf_line_of_exactly_the_limit_is_accepted_wherever_the_chunks_split():
    head = b"orig_code,dest_code,day,price\r\n"
    prefix = b"CNSHA,NLRTM,2016-01-01,"
    line = prefix + b"0" * (formats.MAX_RECORD_BYTES - len(prefix) - 1) + b"5"
    assert len(line) == formats.MAX_RECORD_BYTES
    # Whole, and with a chunk that ends right after the \r and holds no line end at all.
    for chunks in ([head + line + b"\r\n"], [head, line + b"\r", b"\n"]):
        assert parse("csv", chunks) == b"CNSHA,NLRTM,2016-01-01,5,7\n"


@pytest.mark.parametrize("size", [1000, 1 << 20])
def test_an_ndjson_line_of_the_documented_64_kib_is_accepted_and_one_byte_more_is_not(size):
    # The README's figure, written out: a change of the code's limit must change the README too.
    limit = 64 * 1024
    start = b'{"orig_code":"CNSHA","dest_code":"NLRTM","day":"2016-01-01","price":'

    def line(length: int) -> bytes:
        return start + b" " * (length - len(start) - 2) + b"5}"

    assert len(line(limit)) == limit
    assert parse("ndjson", split(line(limit) + b"\n", size)) == b"CNSHA,NLRTM,2016-01-01,5,7\n"
    with pytest.raises(formats.InvalidFile, match="longer than"):
        parse("ndjson", split(line(limit + 1) + b"\n", size))
    # "Any line, blank or not": a blank line is held to the limit too.
    with pytest.raises(formats.InvalidFile, match="longer than"):
        parse("ndjson", split(line(limit) + b"\n" + b" " * (limit + 1) + b"\n", size))


@pytest.mark.parametrize("size", [1000, 1 << 20])
def test_a_json_element_of_exactly_the_limit_is_accepted_and_one_more_is_not(size):
    start = b'{"orig_code":"CNSHA","dest_code":"NLRTM","day":"2016-01-01","price":'

    def element(length: int) -> bytes:
        return start + b" " * (length - len(start) - 2) + b"5}"

    assert len(element(formats.MAX_RECORD_BYTES)) == formats.MAX_RECORD_BYTES
    assert parse("json", split(b"[" + element(formats.MAX_RECORD_BYTES) + b"]", size)) == b"CNSHA,NLRTM,2016-01-01,5,7\n"
    with pytest.raises(formats.InvalidFile, match="longer than"):
        parse("json", split(b"[" + element(formats.MAX_RECORD_BYTES + 1) + b"]", size))


def sorted_prices(lanes: int = 20, days: int = 365) -> bytes:
    """The best a real file compresses: lanes and days in order, at one price (11 times)."""
    lines = [b"orig_code,dest_code,day,price"]
    for o in range(lanes):
        for d in range(lanes):
            lines += [f"P{o:04d},P{d:04d},{day},1000".encode() for day in DAYS[:days]]
    return b"\n".join(lines) + b"\n"


DAYS = [str(datetime.date(2016, 1, 1) + datetime.timedelta(days=k)) for k in range(366)]


def test_a_gzip_that_inflates_like_no_price_file_is_refused_soon(monkeypatch):
    monkeypatch.setattr(formats, "GZIP_RATIO_FROM_BYTES", 1 << 20)  # 64 MiB in production
    bomb = gzip.compress(b"orig_code,dest_code,day,price\n" + b"CNSHA,NLRTM,2016-01-01,100\n" * 200_000, 9)
    given = 0
    with pytest.raises(formats.InvalidFile, match="inflates more than 200 times"):
        for out in formats.gunzip(split(bomb, 4096)):
            given += len(out)
    assert given <= (1 << 20) + formats.MAX_INFLATE_BYTES  # refused as soon as it could tell
    # The best real files compress: CSV in order at one price (11 times), and JSON
    # indented by 8 with CRLF line ends (61 times).
    csv_file = sorted_prices()
    rows = [{"orig_code": o, "dest_code": d, "day": day, "price": 1000 + k % 7}
            for o, d in (("CNSHA", "NLRTM"), ("CNNGB", "DEHAM")) for k, day in enumerate(DAYS * 20)]
    json_file = json.dumps(rows, indent=8).replace("\n", "\r\n").encode()
    for real in (csv_file, json_file):
        assert len(real) > 2 << 20
        packed = gzip.compress(real, 9)
        assert len(real) / len(packed) > (10 if real is csv_file else 40)
        assert b"".join(formats.gunzip(split(packed, 65536))) == real


@pytest.mark.parametrize("gz", [False, True])
def test_a_file_larger_than_the_limit_is_refused(gz):
    body = as_csv(ROWS)
    chunks = split(gzip.compress(body) if gz else body, 16)
    fmt = formats.Format("csv", gz)
    loads = formats.parser_for(fmt, formats.Rules(PORTS), source_id=7, max_bytes=len(body))
    assert b"".join(loads.copy_chunks(iter(chunks))) == EXPECTED
    refused = formats.parser_for(fmt, formats.Rules(PORTS), source_id=7, max_bytes=len(body) - 1)
    with pytest.raises(formats.InvalidFile, match=f"larger than {len(body) - 1:,} bytes uncompressed"):
        b"".join(refused.copy_chunks(iter(chunks)))


def test_bad_rows_found_before_the_limit_are_what_is_reported():
    # Split, the file would still be refused: the rows say why.
    body = as_csv([("CNSHA", "NLRTM", "2016-13-01", 5)] + ROWS * 50)
    parser = formats.parser_for(formats.Format("csv", False), formats.Rules(PORTS), source_id=7,
                                max_bytes=len(body) // 2)
    with pytest.raises(formats.InvalidFile, match="invalid row.*line 2") as refused:
        b"".join(parser.copy_chunks(iter(split(body, 64))))
    assert refused.value.bad_rows[0]["line"] == 2


@pytest.mark.parametrize("quoting", [csv.QUOTE_ALL, csv.QUOTE_NONNUMERIC, csv.QUOTE_MINIMAL])
@pytest.mark.parametrize("bom, newline", [("", "\n"), ("\ufeff", "\r\n")])
def test_a_quoted_header_is_the_header(quoting, bom, newline):
    # R's write.csv, PowerShell's Export-Csv and "quote all" exports quote the names too.
    out = io.StringIO(newline="")
    writer = csv.writer(out, quoting=quoting, lineterminator=newline)
    writer.writerow(formats.FIELDS)
    writer.writerows(ROWS)
    assert parse("csv", [(bom + out.getvalue()).encode()]) == EXPECTED


@pytest.mark.parametrize("header", ['"orig_code,dest_code",day,price', '"orig_code","dest_code","day"',
                                   '"orig_code","dest_code","day","price "', '"orig_code,"dest_code",day,price'])
def test_a_quoted_header_with_other_names_is_refused(header):
    with pytest.raises(formats.InvalidFile) as caught:
        parse("csv", [as_csv(ROWS, header=header)])
    assert caught.value.bad_rows[0]["line"] == 1
    assert "the first line must be the header orig_code,dest_code,day,price" in caught.value.bad_rows[0]["error"]


@pytest.mark.parametrize("header, reasons", [
    ("orig_code;dest_code;day;price", ["the separator must be a comma, not ';'"]),
    ('"orig_code";"dest_code";"day";"price"', ["the separator must be a comma, not ';'"]),
    # pandas' to_csv writes its index first, with no name; read back and saved, "Unnamed: 0"
    (",orig_code,dest_code,day,price", ["saved pandas index", "index=False"]),
    ("\ufeff,orig_code,dest_code,day,price", ["saved pandas index", "index=False"]),
    ("Unnamed: 0,orig_code,dest_code,day,price", ["saved pandas index", "index=False"]),
    (";orig_code;dest_code;day;price", ["the separator must be a comma, not ';'", "saved pandas index"]),
], ids=["semicolon", "semicolon quoted", "pandas index", "pandas index after a BOM", "pandas index read back",
        "both"])
def test_a_header_a_tool_wrote_so_is_refused_with_its_reason(header, reasons):
    # The README promises the reason; the plain "must be the header" named neither cause.
    separator = ";" if ";" in header else ","
    index = [] if header.startswith("orig_code") or header.startswith('"') else [0]
    body = (header + "\n" + "".join(separator.join(map(str, [*index, *row])) + "\n" for row in ROWS)).encode()
    with pytest.raises(formats.InvalidFile) as caught:
        parse("csv", [body])
    [problem] = caught.value.bad_rows
    assert problem["line"] == 1 and problem["error"].startswith("the first line must be the header"), problem
    for reason in reasons:
        assert reason in problem["error"], problem


def test_a_header_with_other_names_is_given_no_tools_reason():
    with pytest.raises(formats.InvalidFile) as caught:
        parse("csv", [as_csv(ROWS, header="orig;dest;day;price")])
    assert caught.value.bad_rows[0]["error"] == ("the first line must be the header orig_code,dest_code,day,price, "
                                                 "got 'orig;dest;day;price'")


def _pandas_columns(rows) -> bytes:
    return json.dumps({field: {str(i): row[n] for i, row in enumerate(rows)}
                       for n, field in enumerate(formats.FIELDS)}).encode()


@pytest.mark.parametrize("body, advice", [
    (as_ndjson(ROWS), "a file of one object per line is NDJSON: name it .ndjson"),
    (_pandas_columns(ROWS), "to_json(orient='records')"),
    ("\n".join(json.dumps(o, indent=2) for o in json.loads(as_json(ROWS))).encode(),  # jq '.[]'
     "objects one after another: put them in one array"),
    (json.dumps({"data": json.loads(as_json(ROWS))}).encode(), "must be the whole file, not a value inside"),
], ids=["ndjson", "pandas columns", "jq stream", "wrapped array"])
def test_a_json_file_of_objects_is_told_what_it_most_likely_is(body, advice):
    with pytest.raises(formats.InvalidFile) as caught:
        parse("json", [body])
    error = caught.value.bad_rows[0]["error"]
    assert error.startswith("malformed JSON array: expected '[', got '{'") and advice in error, error



@pytest.mark.parametrize("body, advice", [
    (_pandas_columns(ROWS * 50_000), "to_json(orient='records')"),
    (json.dumps({"data": json.loads(as_json(ROWS * 50_000))}).encode(), "must be the whole file, not a value inside"),
], ids=["pandas columns", "wrapped array"])
def test_the_advice_holds_for_files_larger_than_a_download_chunk(body, advice):
    assert len(body) > 2 << 20
    with pytest.raises(formats.InvalidFile) as caught:
        parse("json", split(body, 1 << 20))
    assert advice in caught.value.bad_rows[0]["error"]


def test_ndjson_rows_as_arrays_of_values_are_not_told_to_be_json():
    with pytest.raises(formats.InvalidFile) as caught:
        parse("ndjson", [b'["CNSHA","NLRTM","2016-01-01",100]\n'])
    assert caught.value.bad_rows[0]["error"] == "expected a JSON object, got an array"
