"""A real S3/SQS endpoint for tests: one moto_server per session, fresh names per test.

The session's environment gets fake credentials, a region and AWS_ENDPOINT_URL, so that
every boto3 client (in this process and in subprocesses that inherit the environment)
talks to moto and never to AWS.
"""

import contextlib
import itertools
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from dataclasses import dataclass

import boto3
import pytest

from tests.support.net import free_port, listens
from tests.support.proc import die_with_parent, stop_process

_names = itertools.count()

FAKE_AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_REGION": "us-east-1",
    # Keep a developer's own profile and config out of the tests.
    "AWS_CONFIG_FILE": os.devnull,
    "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
}


def start_moto(port: int | None = None, log_path=None) -> tuple[subprocess.Popen, str]:
    """Start moto_server on 127.0.0.1; return the process and its endpoint URL once it answers."""
    port_given = port is not None
    port = port or free_port()
    out = open(log_path, "wb") if log_path else subprocess.DEVNULL
    # Gone with the session even when it is killed outright (a CI timeout, the OOM killer).
    process = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                               stdout=out, stderr=subprocess.STDOUT, preexec_fn=die_with_parent)
    if log_path:
        out.close()  # the child has its own copy
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            if _answers(port) and not port_given:
                # Another process bound the port between free_port() and moto: another port.
                return start_moto(None, log_path)
            raise RuntimeError(f"moto_server exited with {process.returncode}")
        # Something else may answer on the port (see above), another session's moto even:
        # ours, once our process holds the listening socket and moto's API answers.
        if listens(process.pid, port) and _is_moto(port):
            return process, f"http://127.0.0.1:{port}"
        time.sleep(0.1)
    process.kill()
    raise RuntimeError("moto_server did not start within 30 s")


def _answers(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
        return True
    except OSError:
        return False


def _is_moto(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/moto-api/data.json", timeout=5) as answer:
            json.loads(answer.read())
            return True
    except (OSError, ValueError):
        return False


def stop_moto(process: subprocess.Popen) -> None:
    stop_process(process)


@pytest.fixture(scope="session")
def moto_endpoint(tmp_path_factory):
    """URL of a moto_server started for this session; the environment points boto3 at it."""
    process, url = start_moto(log_path=tmp_path_factory.mktemp("moto") / "moto.log")
    with pytest.MonkeyPatch.context() as mp:
        for name, value in FAKE_AWS_ENV.items():
            mp.setenv(name, value)
        mp.setenv("AWS_ENDPOINT_URL", url)
        for name in ("AWS_PROFILE", "AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL_SQS"):
            mp.delenv(name, raising=False)
        yield url
    stop_moto(process)


@pytest.fixture
def aws_env(monkeypatch):
    """Fake credentials and the region eu-west-1 in the environment, with no endpoint,
    profile or instance metadata to fall back on; yields monkeypatch to change them."""
    for name, value in {**FAKE_AWS_ENV, "AWS_REGION": "eu-west-1", "AWS_DEFAULT_REGION": "eu-west-1",
                        "AWS_EC2_METADATA_DISABLED": "true"}.items():
        monkeypatch.setenv(name, value)
    for name in ("AWS_PROFILE", "AWS_ENDPOINT_URL"):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def without_credentials(monkeypatch) -> None:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name, raising=False)


def web_identity(monkeypatch, token_file, role: str) -> None:
    """IRSA's environment, as EKS's webhook sets it, and no static credentials."""
    without_credentials(monkeypatch)
    monkeypatch.setenv("AWS_ROLE_ARN", f"arn:aws:iam::123456789012:role/{role}")
    monkeypatch.setenv("AWS_WEB_IDENTITY_TOKEN_FILE", str(token_file))


def unique_name(prefix: str) -> str:
    return f"{prefix}-{next(_names)}-{uuid.uuid4().hex[:8]}"


@dataclass
class Bucket:
    """A fresh bucket and a client for it."""

    client: object
    name: str

    def put(self, key: str, body: bytes | str) -> dict:
        """Upload; returns the response (with VersionId when versioning is on)."""
        if isinstance(body, str):
            body = body.encode()
        return self.client.put_object(Bucket=self.name, Key=key, Body=body)

    def enable_versioning(self) -> None:
        self.client.put_bucket_versioning(Bucket=self.name, VersioningConfiguration={"Status": "Enabled"})


@pytest.fixture
def s3(moto_endpoint) -> Bucket:
    client = boto3.client("s3", endpoint_url=moto_endpoint)
    bucket = Bucket(client, unique_name("test"))
    client.create_bucket(Bucket=bucket.name)
    return bucket


@contextlib.contextmanager
def silent_sts(monkeypatch, token_file, role: str):
    """IRSA's environment (``web_identity``) with an STS that accepts connections and never
    answers; yields the server, whose ``accepted`` counts the connections."""
    from tests.support.net import SilentServer

    token_file.write_text("eyJ.a.b")
    web_identity(monkeypatch, token_file, role)
    sts = SilentServer()
    try:
        monkeypatch.setenv("AWS_ENDPOINT_URL_STS", f"http://127.0.0.1:{sts.port}")
        yield sts
    finally:
        sts.close()
