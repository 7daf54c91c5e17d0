"""Invalid files load nothing, exit 2 and leave a 'rejected' record that says why and where."""

import codecs
import gzip
import json

import pytest

from tests.ingest.conftest import (
    ENCODERS, ROWS, as_csv, as_json, as_ndjson, as_objects, encode, last_run, prices, run_cli, run_job,
)
from tests.support.world import insert_prices

GOOD = as_csv(ROWS)

CASES = {
    # name: (key, body, expected error fragment, position of the first bad row)
    "unknown port": ("p.csv", as_csv([ROWS[0], ("XXXXX", "NLRTM", "2016-01-01", 5)]), "unknown port code 'XXXXX'", 3),
    "bad date": ("p.csv", as_csv([("CNSHA", "NLRTM", "2016-02-30", 5)]), "day '2016-02-30' is not a date of the calendar",
                 2),
    "date shape": ("p.csv", as_csv([("CNSHA", "NLRTM", "1/2/2016", 5)]), "day must be a date", 2),
    "negative price": ("p.csv", as_csv([ROWS[0], ROWS[1], ("CNSHA", "NLRTM", "2016-01-01", -5)]), "whole number", 4),
    "zero price": ("p.csv", as_csv([("CNSHA", "NLRTM", "2016-01-01", 0)]), "between 1 and 10000000", 2),
    "price too high": ("p.csv", as_csv([("CNSHA", "NLRTM", "2016-01-01", 10_000_001)]), "between 1 and", 2),
    "fractional price": ("p.ndjson", b'{"orig_code":"CNSHA","dest_code":"NLRTM","day":"2016-01-01","price":1.5}\n',
                         "without a fraction or exponent", 1),
    "quoted price in JSON": ("p.json", json.dumps(as_objects([ROWS[0], ("CNSHA", "NLRTM", "2016-01-01", "1200")]))
                             .encode(), "not a string", 1),
    "price of 5,000 digits": ("p.csv", as_csv([("CNSHA", "NLRTM", "2016-01-01", "9" * 5000)]), "between 1 and", 2),
    "number of 5,000 digits in NDJSON": ("p.ndjson", b'{"orig_code":"CNSHA","dest_code":"NLRTM","day":"2016-01-01",'
                                         b'"price":' + b"1" * 5000 + b"}\n", "longer than 4300 digits", 1),
    "deeply nested JSON": ("p.json", b"[" + b"[" * 5000 + b"]" * 5000 + b"]", "nested too deeply", 0),
    "missing column in header": ("p.csv", as_csv([r[:3] for r in ROWS], header="orig_code,dest_code,day"),
                                 "header orig_code,dest_code,day,price, got 'orig_code,dest_code,day'", 1),
    # The header as found is quoted: a stray space or a capital shows.
    "header with a trailing space": ("p.csv", as_csv(ROWS, header="orig_code,dest_code,day,price "),
                                     "got 'orig_code,dest_code,day,price '", 1),
    "missing column in a row": ("p.csv", GOOD + b"CNSHA,NLRTM,2016-01-01\n", "expected 4 fields", len(ROWS) + 2),
    "extra column in a row": ("p.csv", GOOD + b"CNSHA,NLRTM,2016-01-01,5,6\n", "expected 4 fields", len(ROWS) + 2),
    "extra key in JSON": ("p.json", json.dumps([{"orig_code": "CNSHA", "dest_code": "NLRTM", "day": "2016-01-01",
                                                  "price": 5, "currency": "USD"}]).encode(), "unexpected ['currency']", 0),
    "missing key in NDJSON": ("p.ndjson", as_ndjson(ROWS) + b'{"orig_code":"CNSHA","day":"2016-01-01","price":5}\n',
                              "missing ['dest_code']", len(ROWS) + 1),
    "truncated gzip": ("p.csv.gz", gzip.compress(GOOD)[:-12], "truncated", None),
    "not gzip though .gz": ("p.csv.gz", GOOD, "not gzip-compressed", None),
    "gzip though not .gz": ("p.csv", gzip.compress(GOOD), "does not end in .gz", None),
    "0-byte object": ("p.csv", b"", "empty (0 bytes)", None),
    "empty file (gzip of nothing)": ("p.csv.gz", gzip.compress(b""), "no price rows", None),
    "empty JSON array": ("p.json", b"[]", "no price rows", None),
    "header only": ("p.csv", b"orig_code,dest_code,day,price\n", "no price rows", None),
    "non-UTF-8 CSV": ("p.csv", GOOD + "CNSHA,NLRTM,2016-01-01,5,caf\xe9\n".encode("latin-1"), "not valid UTF-8",
                      len(ROWS) + 2),
    "non-UTF-8 JSON": ("p.json", '[{"orig_code": "CNSHA", "dest_code": "caf\xe9"}]'.encode("latin-1"),
                       "not valid UTF-8", 0),
    "JSON that is not an array": ("p.json", b'{"orig_code": "CNSHA"}', "expected '['", 0),
    "NDJSON named .json": ("p.json", as_ndjson(ROWS), "got '{'; a file of one object per line is NDJSON: name it .ndjson",
                           0),
    "a spreadsheet's empty row": ("p.csv", GOOD + b",,,\n", "a row of empty cells (a spreadsheet's): delete it",
                                  len(ROWS) + 2),
    "two files joined with their headers": ("p.csv", GOOD + GOOD, "the header again (files joined together?)",
                                            len(ROWS) + 2),
    "two Excel UTF-8 exports joined": ("p.csv", codecs.BOM_UTF8 + GOOD + codecs.BOM_UTF8 + GOOD, "the header again",
                                       len(ROWS) + 2),
    "two gzip files joined": ("p.csv.gz", gzip.compress(GOOD) + gzip.compress(GOOD), "the header again",
                              len(ROWS) + 2),
    "a JSON array saved as NDJSON": ("p.ndjson", json.dumps(as_objects(ROWS)).encode(),
                                     "expected a JSON object, got an array; a file that is one JSON array of objects "
                                     "is JSON: name it .json", 1),
    "a string in a JSON array": ("p.json", json.dumps(["CNSHA,NLRTM,2016-01-01,5"]).encode(),
                                 "expected a JSON object, got a string", 0),
    "lone CR line ends, a small file": ("p.csv", GOOD.replace(b"\n", b"\r"), "a CR (\\r) that ends no CRLF", 1),
    "lone CR line ends, over 64 KiB": ("p.csv", (GOOD + GOOD[GOOD.index(b"\n") + 1:] * 2000).replace(b"\n", b"\r"),
                                       "line longer than 65536 bytes; it holds a CR (\\r) that ends no CRLF", 1),
    "CR CR LF line ends": ("p.csv", GOOD.replace(b"\n", b"\r\r\n"), "a CR (\\r) that ends no CRLF", 1),
    # csv.reader, which reads a line with quotes, would take the stray CR for the line's end.
    "a stray CR before a quoted row's CRLF": ("p.csv", b'orig_code,dest_code,day,price\r\n"CNSHA",NLRTM,2016-01-01,5\r\r\n',
                                               "a CR (\\r) that ends no CRLF", 2),
    "a newline after the gzip stream": ("p.csv.gz", gzip.compress(GOOD) + b"\n",
                                        "data after its end that starts no gzip member (it starts '\\n')", None),
    "UTF-16 CSV without a byte order mark": ("p.csv", GOOD.decode().encode("utf-16-le"),
                                             "NUL bytes between its first characters); save it as UTF-8", 1),
    # RFC 4180 allows it; no field of a price row holds one, and csv's own error said only
    # "unexpected end of data".
    "a line break inside a quoted field": ("p.csv", b'orig_code,dest_code,day,price\n"CNSHA","NL\nRTM",2016-01-01,5\n',
                                           "a quoted field not closed on its line", 2),
    "a line break in quotes after a stray quote": ("p.csv", b'orig_code,dest_code,day,price\nCN"SHA,"NL\nRTM",2016-01-01,5\n',
                                                   "a quoted field not closed on its line", 2),
    "an unescaped quote in a quoted field": ("p.csv", b'orig_code,dest_code,day,price\n"CNSHA","NL"RTM",2016-01-01,5\n',
                                             "malformed CSV: ',' expected after '\"'", 2),
    # Not "UTF-16": re-encoding would not help a file with no text in it.
    "a zero-filled CSV": ("p.csv", b"\0" * 4096, "the file starts with NUL bytes, not text", 1),
    "a zero-filled JSON file": ("p.json", b"\0" * 4096, "the file starts with NUL bytes, not text", 0),
    "a gzip of zeros": ("p.csv.gz", gzip.compress(b"\0" * 4096), "the file starts with NUL bytes, not text", 1),
    "UTF-16 BE JSON without a byte order mark": ("p.json", as_json(ROWS).decode().encode("utf-16-be"),
                                                 "save it as UTF-8", 0),
    "a .json object nested too deeply": ("p.json", b'{"a":' * 5000 + b"1" + b"}" * 5000 + b"\n", "expected '['", 0),
    "arrays of values as NDJSON": ("p.ndjson", b'["CNSHA","NLRTM","2016-01-01",100]\n',
                                   "expected a JSON object, got an array", 1),
    "gzip compressed twice": ("p.csv.gz", gzip.compress(gzip.compress(GOOD)), "gzip-compressed twice", None),
    "truncated JSON array": ("p.json", as_json(ROWS)[:-20], "truncated", 3),
    "unclosed JSON array": ("p.json", as_json(ROWS)[:-1], "not closed", 4),
    "malformed NDJSON line": ("p.ndjson", as_ndjson(ROWS) + b'{"orig_code": \n', "malformed JSON", len(ROWS) + 1),
    "unknown extension": ("p.xlsx", GOOD, "unknown file extension", None),
    # A spreadsheet's "Unicode text": every line is full of NULs, which the record must still hold.
    "UTF-16 CSV": ("p.csv", GOOD.decode().encode("utf-16"), "save it as UTF-8", 1),
    "UTF-16 JSON": ("p.json", as_json(ROWS).decode().encode("utf-16"), "save it as UTF-8", 0),
    "UTF-32 BE CSV": ("p.csv", codecs.BOM_UTF32_BE + GOOD.decode().encode("utf-32-be"), "save it as UTF-8", 1),
    "UTF-32 LE NDJSON": ("p.ndjson", as_ndjson(ROWS).decode().encode("utf-32"), "save it as UTF-8", 1),
    "data after gzip's zero padding": ("p.csv.gz", gzip.compress(GOOD) + b"\0" * 512 + gzip.compress(GOOD),
                                       "after the zero bytes", None),
    "NUL in a CSV row": ("p.csv", GOOD + b"CNSHA,NL\x00RTM,2016-01-01,5\n", "unknown port code", len(ROWS) + 2),
    "NUL in a JSON element": ("p.json", b'[{"orig_code": "CNSHA\x00", "dest_code": "NLRTM"}]', "malformed JSON", 0),
    "NUL in an NDJSON line": ("p.ndjson", as_ndjson(ROWS) + b'{"orig_code":"CN\x00SHA"}\n', "malformed JSON",
                              len(ROWS) + 1),
    "repeated key in JSON": ("p.json", b'[{"orig_code":"CNSHA","dest_code":"NLRTM","day":"2016-01-01",'
                             b'"price":5,"price":7}]', "names 'price' more than once", 0),
    "repeated key in NDJSON": ("p.ndjson", b'{"orig_code":"CNSHA","orig_code":"CNSHA","dest_code":"NLRTM",'
                               b'"day":"2016-01-01","price":5}\n', "names 'orig_code' more than once", 1),
    "JSON price with a fraction": ("p.json", b'[{"orig_code":"CNSHA","dest_code":"NLRTM","day":"2016-01-01",'
                                   b'"price":1200.0}]', "without a fraction or exponent, got 1200.0", 0),
    "whitespace-only JSON": ("p.json", b"  \n", "holds no JSON array", 0),
    "true as a JSON price": ("p.json", json.dumps(as_objects([("CNSHA", "NLRTM", "2016-01-01", True)])).encode(),
                             "a whole number, got true", 0),
    # Quoted values are cut short: the controller reads the reason from the log's last 2 KiB.
    "a port code of 5,000 characters": ("p.csv", as_csv([("CNSHA", "N" * 5000, "2016-01-01", 5)]),
                                        "unknown port code 'NNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNN… (5002 characters)",
                                        2),
    "ninety extra keys": ("p.json", json.dumps([{**as_objects([ROWS[0]])[0], **{f"column_{i:02}": i for i in range(90)}}])
                          .encode(), "unexpected ['column_00', 'column_01', 'column_02', 'column_03', 'column_04', "
                                     "and 85 more]", 0),
    # The second row's day is already known, so it takes the fast path of a seen day.
    "zero price on a day seen before": ("p.csv", as_csv([ROWS[0], ("CNSHA", "NLRTM", "2016-01-01", "0000")]),
                                        "between 1 and", 3),
    # Above the bound on a day already seen: the CSV fast path's own bound decides.
    "price too high on a day seen before": ("p.csv", as_csv([ROWS[0], ("CNSHA", "NLRTM", "2016-01-01", 10_000_001)]),
                                            "between 1 and", 3),
    "eight-digit price too high on a day seen before": ("p.csv", as_csv([ROWS[0], ("CNSHA", "NLRTM", "2016-01-01",
                                                                                   99_999_999)]), "between 1 and", 3),
    "basic ISO date": ("p.csv", as_csv([("CNSHA", "NLRTM", "20160101", 5)]), "YYYY-MM-DD", 2),
    "ISO week date": ("p.csv", as_csv([("CNSHA", "NLRTM", "2016-W01-1", 5)]), "YYYY-MM-DD", 2),
    "Arabic-Indic digits": ("p.csv", as_csv([("CNSHA", "NLRTM", "٢٠١٦-٠١-٠٥", 5)]), "YYYY-MM-DD", 2),
}


@pytest.mark.parametrize("case", CASES)
def test_invalid_file_loads_nothing(db, s3, case):
    dsn, conn = db
    insert_prices(conn, [("CNSHA", "NLRTM", "2015-12-31", 777)])  # rows from before ingestion stay
    key, body, message, position = CASES[case]
    s3.put(key, body)

    assert run_job(dsn, s3.name, key) == 2

    assert prices(conn) == [("CNSHA", "NLRTM", "2015-12-31", 777)]
    run = last_run(conn)
    assert run["status"] == "rejected" and run["finished_at"] is not None
    assert message in run["error"]
    # What was downloaded, up to where checking stopped (README): some of the file, never
    # more than it holds; nothing for an empty object or one refused by its name alone.
    if body and case != "unknown extension":
        assert 0 < run["bytes"] <= len(body), (run["bytes"], len(body))
    else:
        assert run["bytes"] in (None, 0)
    if position is not None:
        where = "element" if key.endswith(".json") else "line"
        assert run["bad_rows"][0][where] == position, run["bad_rows"]
        assert message in run["bad_rows"][0]["error"]
        assert "\x00" not in run["bad_rows"][0]["text"]
    if "UTF-8" in message:  # the one problem, not its symptoms
        assert len(run["bad_rows"]) == 1, run["bad_rows"]


def test_only_the_first_twenty_bad_rows_are_listed(db, s3):
    dsn, conn = db
    bad = [("CNSHA", "NLRTM", "2016-01-01", -i) for i in range(1, 50)]
    s3.put("p.csv", as_csv(ROWS + bad))

    assert run_job(dsn, s3.name, "p.csv") == 2

    run = last_run(conn)
    assert [r["line"] for r in run["bad_rows"]] == list(range(len(ROWS) + 2, len(ROWS) + 22))
    assert run["bad_rows"][0]["text"] == "CNSHA,NLRTM,2016-01-01,-1"
    assert run["error"].startswith("at least 20 invalid row(s)")


def test_a_bad_row_after_many_good_ones_rolls_back_what_was_copied(db, s3):
    """Tens of chunks reach COPY before the bad row; none of them is committed."""
    dsn, conn = db
    good = [("CNSHA", "NLRTM", f"2016-{m:02d}-{d:02d}", 100 + d) for m in range(1, 13) for d in range(1, 29)] * 300
    body = as_csv(good) + b"CNSHA,NLRTM,2016-13-01,5\n"
    compressed = gzip.compress(body, compresslevel=1)
    s3.put("big.csv.gz", compressed)

    assert run_job(dsn, s3.name, "big.csv.gz") == 2

    assert prices(conn) == []
    with conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM lane_totals UNION ALL SELECT count(*) FROM ingest_files")
        assert [n for (n,) in cur.fetchall()] == [0, 0]
    assert last_run(conn)["bad_rows"][0]["line"] == len(good) + 2
    # The bad row is the last, so the whole object was downloaded: its stored (gzip) bytes.
    assert last_run(conn)["bytes"] == len(compressed)


def test_quoted_fields_crlf_and_a_bom_are_fine(db, s3):
    dsn, conn = db
    body = '\ufefforig_code,dest_code,day,price\r\n"CNSHA","NLRTM","2016-01-01","1000"\r\nCNNGB,DEHAM,2016-01-02,0900\r\n'
    s3.put("excel.csv", body.encode())

    assert run_job(dsn, s3.name, "excel.csv") == 0

    assert prices(conn) == [("CNNGB", "DEHAM", "2016-01-02", 900), ("CNSHA", "NLRTM", "2016-01-01", 1000)]


def test_the_edge_prices_load_in_csv_on_a_day_seen_before(db, s3):
    """The CSV fast path, which only rows of an already seen day take, keeps the bounds."""
    dsn, conn = db
    rows = [("CNSHA", "NLRTM", "2016-01-01", 5), ("CNSHA", "NLRTM", "2016-01-01", 1),
            ("CNSHA", "NLRTM", "2016-01-01", 10_000_000), ("CNSHA", "NLRTM", "2016-01-01", 9_999_999)]
    s3.put("p.csv", as_csv(rows))

    assert run_job(dsn, s3.name, "p.csv") == 0

    assert prices(conn) == sorted(rows)


@pytest.mark.parametrize("kind, after_bom", [("json", b""), ("ndjson", b""), ("json", b"\n  "), ("ndjson", b"\n")])
def test_a_utf8_bom_and_the_edge_prices_load_in_json_and_ndjson(db, s3, kind, after_bom):
    dsn, conn = db
    rows = [("CNSHA", "NLRTM", "2016-01-01", 1), ("CNNGB", "DEHAM", "2016-01-02", 10_000_000)]
    s3.put(f"p.{kind}", codecs.BOM_UTF8 + after_bom + ENCODERS[kind](rows))

    assert run_job(dsn, s3.name, f"p.{kind}") == 0

    assert prices(conn) == sorted(rows)


@pytest.mark.parametrize("key", ["large.csv", "large.csv.gz"])
def test_a_file_over_ingest_max_file_mib_is_rejected_whole(db, s3, key):
    dsn, conn = db
    rows = [("CNSHA", "NLRTM", "2016-01-01", 100 + i % 50) for i in range(60_000)]  # about 1.6 MiB
    s3.put(key, encode(key.removeprefix("large."), rows))

    done = run_cli(dsn, "--bucket", s3.name, "--key", key, env={"INGEST_MAX_FILE_MIB": "1"})

    assert done.returncode == 2, done.stderr
    assert prices(conn) == []
    run = last_run(conn)
    assert run["status"] == "rejected"
    assert run["error"] == ("the file is larger than 1,048,576 bytes uncompressed (INGEST_MAX_FILE_MIB 1): "
                            "split it into smaller files")
    if not key.endswith(".gz"):  # its size is known from S3: refused before any of it is read
        assert run["bytes"] in (None, 0), run
    assert run_cli(dsn, "--bucket", s3.name, "--key", key, env={"INGEST_MAX_FILE_MIB": "2"}).returncode == 0
    assert len(prices(conn)) == len(rows)


def test_a_gzip_object_over_ingest_max_file_mib_is_rejected_before_its_download(db, s3):
    """Empty gzip members inflate to nothing: only the object's own size bounds the work."""
    dsn, conn = db
    body = gzip.compress(as_csv([("CNSHA", "NLRTM", "2016-01-01", 100)])) + gzip.compress(b"") * 60_000
    assert len(body) > 1 << 20
    s3.put("padded.csv.gz", body)

    done = run_cli(dsn, "--bucket", s3.name, "--key", "padded.csv.gz", env={"INGEST_MAX_FILE_MIB": "1"})

    assert done.returncode == 2, done.stderr
    run = last_run(conn)
    assert run["status"] == "rejected" and run["bytes"] in (None, 0), run
    assert run["error"] == ("the gzip object is larger than 1,048,576 bytes, and so its content "
                            "(INGEST_MAX_FILE_MIB 1): split it into smaller files")
    assert prices(conn) == []
