"""The controller's metrics as Prometheus reads them."""

from prometheus_client import generate_latest

from rates_controller.metrics import SET_ASIDE_REASONS, Metrics


def test_every_set_aside_reason_is_exported_at_zero_before_it_happens():
    # increase() needs a sample before the first set-aside, or that file raises no alert.
    exported = generate_latest(Metrics().registry).decode()
    for reason in SET_ASIDE_REASONS:
        assert f'rates_controller_files_set_aside_total{{reason="{reason}"}} 0.0' in exported


def test_the_process_start_time_is_exported_for_the_restart_alert():
    exported = generate_latest(Metrics().registry).decode()
    assert "\nprocess_start_time_seconds " in exported
