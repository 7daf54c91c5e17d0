"""How many requests the job's S3 client sends to a server that keeps failing."""

import http.server
import threading

import pytest

from rates_core.errors import TemporaryError
from rates_ingest import s3source
from rates_ingest.s3source import ObjectRef
from tests.support.aws import silent_sts


class _Unavailable(http.server.BaseHTTPRequestHandler):
    requests = 0

    def do_HEAD(self):  # noqa: N802 (the handler's protocol)
        type(self).requests += 1
        self.send_response(503)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def unavailable_s3(monkeypatch):
    """Yields the handler class, whose ``requests`` counts what reached the server."""
    handler = type("Handler", (_Unavailable,), {"requests": 0})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{server.server_port}")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    # Botocore would sleep up to 20 s between tries; the count is what matters here.
    monkeypatch.setattr("botocore.retries.standard.ExponentialBackoff.delay_amount", lambda self, context: 0)
    yield handler
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize("kwargs, sent", [({}, 5), ({"max_attempts": 2}, 2), ({"max_attempts": 1}, 1)])
def test_max_attempts_counts_the_first_request(unavailable_s3, kwargs, sent):
    # The README's "5 attempts" and AWS_MAX_ATTEMPTS both count every request sent.
    with pytest.raises(TemporaryError, match="503"):
        s3source.head(s3source.client(**kwargs), s3source.ObjectRef("bucket", "key.csv"))
    assert unavailable_s3.requests == sent


@pytest.mark.timeout(60)  # botocore's defaults would hang for 3 minutes before the first S3 request
def test_a_silent_sts_gives_up_in_seconds(aws_env, tmp_path):
    with silent_sts(aws_env, tmp_path / "token", "rates-prod-ingest") as sts:
        with pytest.raises(TemporaryError, match="S3 unavailable"):
            s3source.head(s3source.client(), ObjectRef("uploads", "p.csv"))
        assert len(sts.accepted) == 2  # it did ask STS, and tried once more only
