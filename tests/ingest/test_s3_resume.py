"""A download cut short mid-file resumes from its first missing byte, in the same load."""

import random
from urllib.parse import urlsplit

import boto3
import botocore.exceptions
import pytest

from rates_core.errors import TemporaryError
from rates_ingest import s3source
from tests.ingest.conftest import encode, expected_totals, last_run, prices, totals
from tests.support.db import INGEST_USER, as_user
from tests.support.faults import CuttingProxy
from tests.support.world import PORTS

CODES = [code for code, _name, _parent in PORTS]


def many_rows(count: int) -> list[tuple]:
    rnd = random.Random(3)
    return [(rnd.choice(CODES), rnd.choice(CODES), f"2016-01-{rnd.randint(1, 28):02d}", rnd.randint(100, 9999))
            for _ in range(count)]


@pytest.fixture
def cutting(moto_endpoint, monkeypatch):
    """Make a proxy in front of moto; yields (proxy, an S3 client that goes through it)."""
    monkeypatch.setattr(s3source.Download, "RESUME_DELAY_S", 0)
    proxies = []

    def make(cut_after: int, cuts: int, flip: bool = False):
        target = urlsplit(moto_endpoint)
        proxies.append(CuttingProxy((target.hostname, target.port), cut_after=cut_after, cuts=cuts, flip=flip))
        return proxies[-1], boto3.client("s3", endpoint_url=proxies[-1].url)

    yield make
    for proxy in proxies:
        proxy.close()


@pytest.mark.parametrize("extension, versioned", [("csv", False), ("csv.gz", False), ("csv", True)])
def test_a_stream_cut_twice_resumes_and_loads_every_row_once(db, s3, cutting, extension, versioned):
    dsn, conn = db
    if versioned:  # the ranged GETs pin the version id instead of the ETag
        s3.enable_versioning()
    rows = many_rows(40_000)
    body = encode(extension, rows)
    s3.put(f"cut/prices.{extension}", body)
    proxy, client = cutting(cut_after=len(body) // 3, cuts=2)

    code = run_job_through(client, dsn, s3.name, f"cut/prices.{extension}")

    assert code == 0 and proxy.cut == 2
    assert sorted(prices(conn)) == sorted(rows)
    assert totals(conn) == expected_totals(rows)
    run = last_run(conn)
    assert run["status"] == "loaded" and run["rows"] == len(rows) and run["bytes"] == len(body)


def test_a_stream_cut_every_time_fails_retryably_and_loads_nothing(db, s3, cutting):
    dsn, conn = db
    body = encode("csv", many_rows(40_000))
    s3.put("cut/always.csv", body)
    proxy, client = cutting(cut_after=len(body) // 10, cuts=1000)

    code = run_job_through(client, dsn, s3.name, "cut/always.csv")

    assert code == 1 and proxy.cut == s3source.Download.MAX_RESUMES + 1
    # The README's "up to 5 times per file": the first GET and five resumes, all cut.
    assert proxy.cut == 1 + 5
    assert prices(conn) == []
    run = last_run(conn)
    assert run["status"] == "failed" and f"S3 stream cut {proxy.cut} times" in run["error"]


def test_a_corrupted_download_fails_its_checksum_and_loads_nothing(db, s3, cutting):
    """Every byte arrives, but one is wrong: not a cut to resume, a load to start over."""
    dsn, conn = db
    body = encode("csv", many_rows(40_000))
    s3.client.put_object(Bucket=s3.name, Key="bad/bytes.csv", Body=body, ChecksumAlgorithm="CRC32")
    proxy, client = cutting(cut_after=len(body) // 2, cuts=1, flip=True)

    code = run_job_through(client, dsn, s3.name, "bad/bytes.csv")

    assert code == 1 and proxy.cut == 1
    assert prices(conn) == []
    run = last_run(conn)
    assert run["status"] == "failed" and "checksum" in run["error"], run["error"]


def run_job_through(client, dsn, bucket, key) -> int:
    from rates_ingest import job
    from rates_ingest.settings import Settings

    return job.run(Settings(database_url=as_user(dsn, INGEST_USER), bucket=bucket, key=key), s3=client)


def test_an_unversioned_object_overwritten_after_its_head_is_not_read(s3):
    # The job checked and recorded one object; it must not load the bytes of another (or,
    # resuming, splice the two). A retry of the job sees the new one.
    s3.put("p.csv", b"orig_code,dest_code,day,price\nCNSHA,NLRTM,2016-01-01,5\n")
    ref = s3source.ObjectRef(s3.name, "p.csv")
    info = s3source.head(s3.client, ref)
    s3.put("p.csv", b"orig_code,dest_code,day,price\nCNSHA,NLRTM,2016-01-01,7\n")
    with pytest.raises(TemporaryError, match="412|PreconditionFailed"):
        b"".join(s3source.Download(s3.client, ref, info).chunks())


class _Body:
    """A response body that delivers ``data`` in full, then fails as a dropped connection would."""

    def __init__(self, data: bytes):
        self.data = data

    def iter_chunks(self, size):
        yield from (self.data[i:i + size] for i in range(0, len(self.data), size))
        raise botocore.exceptions.ReadTimeoutError(endpoint_url="http://s3.test")

    def close(self):
        pass


def test_a_stream_that_fails_after_its_last_byte_is_complete_and_not_fetched_again():
    data = b"x" * (s3source.CHUNK_BYTES + 10)
    calls = []

    class S3:
        def get_object(self, **kwargs):
            calls.append(kwargs)
            return {"Body": _Body(data)}

    info = s3source.ObjectInfo(version_id="v1", etag='"e"', size=len(data), last_modified=None)
    download = s3source.Download(S3(), s3source.ObjectRef("b", "k", "v1"), info)

    assert b"".join(download.chunks()) == data
    assert len(calls) == 1 and download.resumes == 0 and download.bytes == len(data)
