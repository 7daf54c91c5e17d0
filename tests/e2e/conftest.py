# The end-to-end tests use the controller's fixtures: real queues fed by S3 notifications,
# the Jobs' runtime objects, and the controller as its own process.
from tests.controller.conftest import controller_process, job_runtime, sqs, uploads  # noqa: F401
