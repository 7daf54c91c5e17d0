import json
import logging

import pytest
import structlog

from rates_core import logs


@pytest.fixture(autouse=True)
def default_logging():
    """configure() points logging at this test's captured stdout, which closes with the
    test: a later test that logs would write to a closed file."""
    yield
    structlog.reset_defaults()
    root = logging.getLogger()
    root.handlers.clear()
    root.setLevel(logging.WARNING)


def test_library_lines_are_json_and_never_debug(capsys):
    logs.configure("DEBUG", component="x")

    logging.getLogger("botocore.endpoint").debug("headers with X-Amz-Security-Token: secret")
    logging.getLogger("kubernetes.client.rest").debug("response body with a bearer token")
    logging.getLogger("botocore.credentials").info("Found credentials in environment variables.")
    logs.get_logger("ours").debug("our own debug line")

    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [line["event"] for line in lines] == ["Found credentials in environment variables.",
                                                 "our own debug line"]
    assert lines[0]["logger"] == "botocore.credentials" and lines[0]["component"] == "x"
