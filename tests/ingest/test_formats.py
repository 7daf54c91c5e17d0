"""The parsers on their own: chunk boundaries anywhere, gzip members, bounded output."""

import gzip
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


def test_concatenated_gzip_members_are_one_file():
    body = as_csv(ROWS)
    cut = body.index(b"\n", 40) + 1
    assert parse("csv", split(gzip.compress(body[:cut]) + gzip.compress(body[cut:]), 5), gz=True) == EXPECTED


def test_gunzip_output_comes_in_bounded_steps():
    gz = gzip.compress(b"0" * (50 * formats.MAX_INFLATE_BYTES), 9)
    assert len(gz) < 100_000  # a small object that inflates to 50 MiB
    sizes = [len(out) for out in formats.gunzip([gz])]
    assert max(sizes) <= formats.MAX_INFLATE_BYTES and sum(sizes) == 50 * formats.MAX_INFLATE_BYTES


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
