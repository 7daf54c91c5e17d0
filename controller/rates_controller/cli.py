"""``python -m rates_controller``: run the control loop until SIGTERM or SIGINT."""

import signal
import sys

import click

from rates_core import logs, signals
from rates_core.env import ConfigError

from rates_core.errors import EXIT_PERMANENT, EXIT_TEMPORARY, PermanentError, TemporaryError

from . import jobs, kube, metrics, queue
from .controller import Controller
from .events import UploadedObject
from .settings import Settings

EXIT_CONFIG = EXIT_PERMANENT
# Every line carries it, as the API's carry "rates-api".
SERVICE = "rates-controller"


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
def command() -> int:
    """Create one Kubernetes Job per price file uploaded to S3 (configured by the environment)."""
    try:
        settings = Settings.from_env()
        api = kube.api_client()
    except ConfigError as exc:
        logs.configure(service=SERVICE)
        logs.get_logger("rates_controller").error("configuration error", error=str(exc))
        return EXIT_CONFIG
    logs.configure(settings.log_level, service=SERVICE)
    log = logs.get_logger("rates_controller")
    jobs_api = kube.JobsApi(api, settings.job.namespace)
    try:
        _check_job_settings(jobs_api, settings, log)
        measured = metrics.Metrics()
        if settings.metrics_port:
            _serve_metrics(measured, settings)
        sqs = queue.sqs_client(settings.poll_wait_seconds)
    except (ConfigError, OSError) as exc:
        log.error("configuration error", error=str(exc))
        return EXIT_CONFIG
    controller = Controller(settings, jobs_api, queue.Queue(sqs, settings.queue_url),
                            queue.Queue(sqs, settings.dead_letter_queue_url), measured, log)

    received = stop_on_signals(controller)
    log.info("started", queue=settings.queue_url, namespace=settings.job.namespace,
             max_active_jobs=settings.max_active_jobs)
    controller.run()
    log.info("stopped", signal=received[0] if received else None)
    return 0


def stop_on_signals(controller) -> list[int]:
    """Have SIGTERM and SIGINT stop ``controller``'s loop; the list fills with the signals.

    The handler does nothing: setting the stop event inside it could wait for ever on a
    lock the interrupted main thread holds (see rates_core.signals), until the kubelet's
    SIGKILL. A thread of its own sets it.
    """
    received: list[int] = []
    wanted = (signal.SIGTERM, signal.SIGINT)

    def stop(signum: int) -> None:
        received.append(signum)
        controller.stopping.set()

    for signum in wanted:
        signal.signal(signum, lambda _signum, _frame: None)
    signals.watch(wanted, stop, name="stop-on-signals")
    return received


def _serve_metrics(measured: metrics.Metrics, settings: Settings) -> None:
    try:
        # A pass takes at most one long poll plus a few bounded API calls.
        metrics.serve(measured, settings.metrics_port, stale_after=3 * (settings.poll_wait_seconds + 60))
    except OSError as exc:  # "[Errno 98] Address already in use" alone names neither port nor variable
        raise ConfigError(f"METRICS_PORT {settings.metrics_port}: {exc}") from None


def _check_job_settings(jobs_api: kube.JobsApi, settings: Settings, log) -> None:
    """Have the API server check a sample Job (a dry run), so that settings it would refuse
    (a bad quantity, a limit below its request) stop the controller, not every upload."""
    sample = jobs.manifest(UploadedObject("bucket", "key.csv", None, None, None), settings.job)
    try:
        jobs_api.validate(sample)
    except PermanentError as exc:
        raise ConfigError(f"the API server refuses the Jobs these settings make: {exc}") from None
    except TemporaryError as exc:  # checked again by every create; not a reason to wait
        log.warning("could not check the Job settings", error=str(exc))


def main(argv: list[str] | None = None) -> int:
    try:
        return command.main(args=argv, prog_name="rates_controller", standalone_mode=False)
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except click.ClickException as exc:
        exc.show()
        return EXIT_CONFIG
    except click.Abort:
        return 1
    except Exception as exc:  # noqa: BLE001 - a bug; SystemExit and KeyboardInterrupt go on as before
        logs.crashed(exc, SERVICE, "rates_controller")
        return EXIT_TEMPORARY


if __name__ == "__main__":
    sys.exit(main())
