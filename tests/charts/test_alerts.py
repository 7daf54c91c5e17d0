"""The charts' PrometheusRules, run by promtool: each alert fires on the series of its
trouble, only after its `for`, and stays quiet on those of a healthy release.

The series are named and labelled as the apps export them and as the Prometheus Operator
labels what a ServiceMonitor scrapes (job = the Service's name, namespace).
"""

import subprocess
from pathlib import Path

import pytest
import yaml

from tests.charts.test_api_chart import CHART as API_CHART
from tests.charts.test_api_chart import FROM_TERRAFORM as API_FROM_TERRAFORM
from tests.charts.test_controller_chart import CHART as CONTROLLER_CHART
from tests.charts.test_controller_chart import RELEASE as CONTROLLER
from tests.charts.test_controller_chart import render as render_controller
from tests.charts.test_controller_chart import values_args as controller_values

pytestmark = pytest.mark.kube  # helm comes with the test control plane's tools

NAMESPACE = "prod"
API = {"job": "rates-api", "namespace": NAMESPACE}
CTL = {"job": CONTROLLER, "namespace": NAMESPACE}


def series(name: str, labels: dict, values: str) -> dict:
    inner = ",".join(f'{k}="{v}"' for k, v in labels.items())
    return {"series": f"{name}{{{inner}}}", "values": values}


def run_promtool(promtool: Path, tmp_path: Path, rule: dict, tests: list[dict], annotations: bool = False) -> None:
    """`promtool check rules` on the rendered groups, then `promtool test rules` on a copy
    without annotations (promtool compares them too; check validates their templates), or
    with them, for tests that give each expected alert's ``exp_annotations``."""
    groups = rule["spec"]["groups"]
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump({"groups": groups}))
    check = subprocess.run([promtool, "check", "rules", "rules.yaml"], cwd=tmp_path, capture_output=True,
                           text=True, timeout=60)
    assert check.returncode == 0, check.stdout + check.stderr
    bare = [{**g, "rules": [{k: v for k, v in r.items() if annotations or k != "annotations"} for r in g["rules"]]}
            for g in groups]
    (tmp_path / "bare.yaml").write_text(yaml.safe_dump({"groups": bare}))
    (tmp_path / "tests.yaml").write_text(yaml.safe_dump(
        {"rule_files": ["bare.yaml"], "evaluation_interval": "1m", "tests": tests}))
    result = subprocess.run([promtool, "test", "rules", "tests.yaml"], cwd=tmp_path, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


def expanded(rule: dict, alert: str, expansions: dict[str, str]) -> dict[str, str]:
    """``alert``'s annotations as Prometheus should expand them: each template in
    ``expansions`` replaced by its value, and no other template left."""
    [found] = [r for g in rule["spec"]["groups"] for r in g["rules"] if r.get("alert") == alert]
    texts = dict(found["annotations"])
    for template, value in expansions.items():
        assert any(template in text for text in texts.values()), (alert, template)
        texts = {name: text.replace(template, value) for name, text in texts.items()}
    assert not [text for text in texts.values() if "{{" in text], texts
    return texts


def annotated_case(input_series: list[dict], at: str, alerts: list[tuple[str, dict, dict]]) -> dict:
    """One promtool test of alerts' labels and annotations, each (alertname, labels, annotations)."""
    return {"interval": "1m", "input_series": input_series,
            "alert_rule_test": [{"eval_time": at, "alertname": name,
                                 "exp_alerts": [{"exp_labels": labels, "exp_annotations": texts}]}
                                for name, labels, texts in alerts]}


def case(input_series: list[dict], alerts: list[tuple[str, str, list[dict]]]) -> dict:
    """One promtool test: (alertname, eval_time, expected alerts' labels) each."""
    return {"interval": "1m", "input_series": input_series,
            "alert_rule_test": [{"eval_time": at, "alertname": name, "exp_alerts": [{"exp_labels": e} for e in exp]}
                                for name, at, exp in alerts]}


# --- the API ---------------------------------------------------------------------------------

API_ALERTS = ("RatesApiDown", "RatesApiErrors", "RatesApiNotReady", "RatesApiSlow", "RatesApiDatabasePoolSaturated",
              "RatesApiSaturated", "RatesApiSlowClients", "RatesApiAtMaxReplicas")
# kube-state-metrics' series of the release's HPA (its own job; the object's namespace and name).
HPA = {"job": "kube-state-metrics", "namespace": NAMESPACE, "horizontalpodautoscaler": "rates-api"}


def api_rule(helm, *json_sets: str) -> dict:
    args = ["template", "rates-api", str(API_CHART), "-n", NAMESPACE, "-f", str(API_CHART / "values-prod.yaml"),
            *API_FROM_TERRAFORM, "--set", "metrics.prometheusRule.enabled=true", "--set", "metrics.serviceMonitor.enabled=true"]
    for assignment in json_sets:
        args += ["--set-json", assignment]
    docs = [d for d in yaml.safe_load_all(helm(*args).stdout) if d]
    [rule] = [d for d in docs if d["kind"] == "PrometheusRule"]
    return rule


def requests(status: str, per_minute: int, route: str = "/rates") -> dict:
    labels = {**API, "route": route, "method": "GET", "status": status}
    return series("rates_api_requests_total", labels, f"0+{per_minute}x40")


def readiness(ready_per_minute: int, not_ready_per_minute: int) -> list[dict]:
    """/readyz checks: 3 pods probed every 5 s by the kubelet, and the ALB's checks."""
    return [requests("200", ready_per_minute, "/readyz"), requests("503", not_ready_per_minute, "/readyz")]


def latency(fast_per_minute: int, slow_per_minute: int) -> list[dict]:
    """A histogram of /rates: ``fast`` requests under 0.05 s, ``slow`` ones of 2-5 s."""
    labels = {**API, "route": "/rates", "method": "GET", "status": "200"}
    buckets = {"0.05": fast_per_minute, "1.0": fast_per_minute, "2.5": fast_per_minute + slow_per_minute // 2,
               "5.0": fast_per_minute + slow_per_minute, "+Inf": fast_per_minute + slow_per_minute}
    return [series("rates_api_request_duration_seconds_bucket", {**labels, "le": le}, f"0+{n}x40")
            for le, n in buckets.items()]


def threads(in_progress: str, of: int = 24) -> list[dict]:
    """gunicorn's request threads (3 pods of 2 workers x 4) and those serving a request."""
    return [series("rates_api_requests_in_progress", API, in_progress),
            series("rates_api_request_threads", API, f"{of}x40")]


def autoscaler(current: str, most: int = 20, **other: str) -> list[dict]:
    """An HPA's pods and its maximum, as kube-state-metrics exports them; the release's, or
    another with ``other`` labels."""
    labels = {**HPA, **other}
    return [series("kube_horizontalpodautoscaler_status_current_replicas", labels, current),
            series("kube_horizontalpodautoscaler_spec_max_replicas", labels, f"{most}x40")]


def header_timeouts(values: str, pod: str = "rates-api-6c9f8-a1") -> dict:
    """Connections a pod's workers closed for sending no request line and headers in 10 s
    (one counter a pod: the workers' files summed)."""
    return series("rates_api_header_timeouts_total", {**API, "pod": pod}, values)


def healthy_api(errors_per_minute: int = 0, slow_per_minute: int = 0, pool_in_use: int = 6,
                not_ready_per_minute: int = 0, in_progress: str = "5x40", pods: str = "3x40",
                timeouts: str = "0x40") -> list[dict]:
    return [series("up", API, "1x40"), requests("200", 600), requests("503", errors_per_minute),
            *readiness(54 - not_ready_per_minute, not_ready_per_minute), *latency(600, slow_per_minute),
            series("rates_api_db_pool_in_use", API, f"{pool_in_use}x40"),
            series("rates_api_db_pool_size", API, "20x40"), *threads(in_progress), *autoscaler(pods),
            header_timeouts(timeouts)]


def quiet(names, at: str = "35m") -> list:
    return [(name, at, []) for name in names]


def test_a_healthy_api_raises_no_alert(helm, promtool, tmp_path):
    # 1 % of errors, 0.3 % slow requests, 18 of 20 connections lent, one pod of three out
    # of rotation, 21 of 24 threads busy and the HPA one pod below its maximum: all below
    # the thresholds.
    run_promtool(promtool, tmp_path, api_rule(helm), [
        case(healthy_api(errors_per_minute=6, slow_per_minute=2, pool_in_use=18, not_ready_per_minute=18,
                         in_progress="21x40", pods="19x40"),
             quiet(API_ALERTS))])


def test_an_idle_environment_raises_no_errors_alert_for_a_few_failed_requests(helm, promtool, tmp_path):
    # Staging at night: no /rates traffic but two requests, both 503 (an RDS maintenance
    # blip), 4 minutes apart. 100 % of the traffic failed, but it is two requests.
    idle = [series("up", API, "1x60"),
            series("rates_api_requests_total", {**API, "route": "/rates", "method": "GET", "status": "503"},
                   "0x2 1x3 2x54"),
            series("rates_api_requests_total", {**API, "route": "/rates", "method": "GET", "status": "200"}, "0x60")]
    run_promtool(promtool, tmp_path, api_rule(helm), [
        case(idle, [("RatesApiErrors", at, []) for at in ("3m", "5m", "7m", "9m", "12m", "20m")])])
    # Few requests, but above the minimum, still raise it: 2 of 8 a minute (0.13 a second) fail.
    few = [series("up", API, "1x40"), requests("200", 6), requests("503", 2)]
    run_promtool(promtool, tmp_path, api_rule(helm), [
        case(few, [("RatesApiErrors", "4m", []),
                   ("RatesApiErrors", "12m", [{"severity": "critical", "namespace": NAMESPACE}])])])


def test_a_stray_slow_client_raises_no_alert(helm, promtool, tmp_path):
    # One connection cut every 10 minutes; a burst of 30 at once (a client's bad minute),
    # which holds the 5-minute rate above 1 a minute for 5 minutes, not 15; and no series at
    # all (pods that export none): all quiet.
    run_promtool(promtool, tmp_path, api_rule(helm), [
        case(healthy_api(timeouts="0x10 1x10 2x10 3x10"),
             [("RatesApiSlowClients", at, []) for at in ("12m", "22m", "32m", "40m")]),
        case(healthy_api(timeouts="0x10 30x30"), [("RatesApiSlowClients", at, []) for at in ("12m", "20m", "30m")]),
        case([s for s in healthy_api() if not s["series"].startswith("rates_api_header_timeouts_total")],
             quiet({"RatesApiSlowClients"}, "30m"))])


def test_a_database_outage_raises_not_ready_though_no_request_fails(helm, promtool, tmp_path):
    # Every pod out of rotation: no /rates request reaches one, none fails, pods still scraped.
    outage = [series("up", API, "1x40"), requests("200", 0), requests("503", 0), *readiness(0, 54),
              *latency(0, 0), series("rates_api_db_pool_in_use", API, "0x40"),
              series("rates_api_db_pool_size", API, "20x40")]
    run_promtool(promtool, tmp_path, api_rule(helm), [
        case(outage, [("RatesApiNotReady", "4m", []),
                      ("RatesApiNotReady", "12m", [{"severity": "critical", "namespace": NAMESPACE}]),
                      *quiet(set(API_ALERTS) - {"RatesApiNotReady"}, "12m")])])


def test_api_alerts_fire_on_their_trouble_after_their_for(helm, promtool, tmp_path):
    run_promtool(promtool, tmp_path, api_rule(helm), [
        # 60 of 660 requests a minute fail (9 %): above 5 % as soon as there are two samples,
        # and the alert fires 5 minutes after that.
        case(healthy_api(errors_per_minute=60), [
            ("RatesApiErrors", "4m", []), ("RatesApiErrors", "12m", [{"severity": "critical", "namespace": NAMESPACE}]),
            *quiet({"RatesApiSlow", "RatesApiDown", "RatesApiDatabasePoolSaturated"}, "12m")]),
        # 3 % of requests take 2-5 s: the 99th percentile is above 1 s, for 10 minutes.
        case(healthy_api(slow_per_minute=20), [
            ("RatesApiSlow", "8m", []), ("RatesApiSlow", "17m", [{"severity": "warning", "namespace": NAMESPACE}]),
            *quiet({"RatesApiErrors"}, "17m")]),
        case(healthy_api(pool_in_use=19), [
            ("RatesApiDatabasePoolSaturated", "5m", []),
            ("RatesApiDatabasePoolSaturated", "12m", [{"severity": "warning", "namespace": NAMESPACE}])]),
        # 23 of 24 threads busy (one taking the next queued request): saturated after 10 minutes.
        case(healthy_api(in_progress=" ".join(["23 24 24 23 24 24 24 23"] * 5)), [
            ("RatesApiSaturated", "9m", []),
            ("RatesApiSaturated", "12m", [{"severity": "warning", "namespace": NAMESPACE}]),
            *quiet({"RatesApiSlow", "RatesApiDatabasePoolSaturated", "RatesApiErrors"}, "12m")]),
        # 2 connections a minute cut for sending no headers, from minute 0: the 5-minute rate
        # passes 1 a minute at minute 3 (1.2), and the alert fires 15 minutes after that.
        case(healthy_api(timeouts="0+2x40"), [
            ("RatesApiSlowClients", "17m", []),
            ("RatesApiSlowClients", "19m", [{"severity": "warning", "namespace": NAMESPACE}]),
            *quiet({"RatesApiSaturated", "RatesApiErrors"}, "19m")]),
        # Summed over the pods: two with 0.6 a minute each are 1.2 a minute (above 1 from
        # minute 5); one alone is not.
        case([*healthy_api(timeouts="0+0.6x40"), header_timeouts("0+0.6x40", pod="rates-api-6c9f8-b2")], [
            ("RatesApiSlowClients", "19m", []),
            ("RatesApiSlowClients", "21m", [{"severity": "warning", "namespace": NAMESPACE}])]),
        case(healthy_api(timeouts="0+0.6x40"), quiet({"RatesApiSlowClients"}, "35m")),
        # The HPA at its maximum: warned after 15 minutes of it.
        case(healthy_api(pods="3x2 6x2 12x2 20x34"), [
            ("RatesApiAtMaxReplicas", "20m", []),
            ("RatesApiAtMaxReplicas", "25m", [{"severity": "warning", "namespace": NAMESPACE}])]),
        # Another release's HPA at its maximum (another namespace, another name) is not this one's.
        case([*healthy_api(), *autoscaler("20x40", namespace="staging"),
              *autoscaler("20x40", horizontalpodautoscaler="other")], quiet({"RatesApiAtMaxReplicas"})),
        # Every scrape fails; then no series of this namespace at all (every pod deleted).
        case([series("up", API, "0x20")], [("RatesApiDown", "4m", []),
                                           ("RatesApiDown", "6m", [{"severity": "critical", "namespace": NAMESPACE}])]),
        # Only another namespace's API answers: not this release's.
        case([series("up", {**API, "namespace": "staging"}, "1x20")],
             [("RatesApiDown", "6m", [{"severity": "critical", "namespace": NAMESPACE}])]),
    ])


def test_api_alerts_say_how_bad_it_is(helm, promtool, tmp_path):
    rule = api_rule(helm)
    # 150 of 750 requests a minute fail; 20 of 620 take 2-5 s, which puts the 99th
    # percentile at 3.45 s by the histogram's linear interpolation in the 2.5-5 s bucket.
    run_promtool(promtool, tmp_path, rule, [
        annotated_case(healthy_api(errors_per_minute=150), "12m", [
            ("RatesApiErrors", {"severity": "critical", "namespace": NAMESPACE},
             expanded(rule, "RatesApiErrors", {"{{ $value | humanizePercentage }}": "20%"}))]),
        annotated_case(healthy_api(slow_per_minute=20), "17m", [
            ("RatesApiSlow", {"severity": "warning", "namespace": NAMESPACE},
             expanded(rule, "RatesApiSlow", {"{{ $value | humanizeDuration }}": "3.45s"}))]),
        # 2 connections cut a minute.
        annotated_case(healthy_api(timeouts="0+2x40"), "19m", [
            ("RatesApiSlowClients", {"severity": "warning", "namespace": NAMESPACE},
             expanded(rule, "RatesApiSlowClients", {"{{ $value | humanize }}": "2"}))]),
    ], annotations=True)


def test_the_thresholds_come_from_the_values(helm, promtool, tmp_path):
    rule = api_rule(helm, "metrics.prometheusRule.errorRatio=0.2", "metrics.prometheusRule.latencyP99Seconds=4")
    run_promtool(promtool, tmp_path, rule, [
        case(healthy_api(errors_per_minute=60, slow_per_minute=20), quiet({"RatesApiErrors", "RatesApiSlow"}))])
    # 660 requests a minute are 11 a second: below a minimum of 12.
    rule = api_rule(helm, "metrics.prometheusRule.errorMinRequestsPerSecond=12")
    run_promtool(promtool, tmp_path, rule, [case(healthy_api(errors_per_minute=60), quiet({"RatesApiErrors"}))])


def test_an_overload_that_queues_requests_for_threads_raises_saturated(helm, promtool, tmp_path):
    """The review's overload (a lock on the totals taken and released again and again, 60
    clients, one pod of 2 workers x 4 threads): clients waited 2.0 s at the median and 6.0 s
    at the 99th percentile, but for a thread, before the app starts its clock. Its histogram
    (the bucket counts measured, a minute's worth) put the 99th percentile at 0.99 s, and the
    pool lent 3 to 7 of its 8 connections: neither RatesApiSlow nor the pool's alert fired."""
    labels = {**API, "route": "/rates", "method": "GET", "status": "200"}
    measured = {"0.0025": 109, "0.005": 211, "0.01": 499, "0.025": 845, "0.05": 917, "0.1": 955, "0.25": 966,
                "0.5": 966, "1.0": 1666, "2.5": 1666, "5.0": 1666, "+Inf": 1666}
    overload = [series("up", API, "1x40"), requests("200", 1666), requests("503", 0),
                *(series("rates_api_request_duration_seconds_bucket", {**labels, "le": le}, f"0+{n}x40")
                  for le, n in measured.items()),
                series("rates_api_db_pool_in_use", API, " ".join(["7 6 5 3 7 6"] * 7)),
                series("rates_api_db_pool_size", API, "8x40"),
                *threads("8x40", of=8)]
    run_promtool(promtool, tmp_path, api_rule(helm), [
        case(overload, [("RatesApiSaturated", "8m", []),
                        ("RatesApiSaturated", "12m", [{"severity": "warning", "namespace": NAMESPACE}]),
                        *quiet({"RatesApiSlow", "RatesApiDatabasePoolSaturated", "RatesApiErrors"}, "20m")])])


def test_the_autoscaler_alert_is_left_out_without_autoscaling(helm):
    rule = api_rule(helm, "autoscaling.enabled=false")
    alerts = {r["alert"] for g in rule["spec"]["groups"] for r in g["rules"]}
    assert alerts == set(API_ALERTS) - {"RatesApiAtMaxReplicas"}
    assert "RatesApiAtMaxReplicas" in {r["alert"] for g in api_rule(helm)["spec"]["groups"] for r in g["rules"]}


def test_the_autoscaler_alert_is_left_out_for_an_autoscaler_held_at_one_size(helm):
    # At its maximum whatever the load: a warning that never cleared (diff review).
    pinned = api_rule(helm, "autoscaling.minReplicas=4", "autoscaling.maxReplicas=4")
    assert "RatesApiAtMaxReplicas" not in {r["alert"] for g in pinned["spec"]["groups"] for r in g["rules"]}


# --- the controller --------------------------------------------------------------------------

CONTROLLER_ALERTS = ("RatesControllerDown", "RatesControllerRestarting", "RatesControllerFileSetAside",
                     "RatesControllerJobsRetried", "RatesControllerErrors", "RatesControllerAtCapacity",
                     "RatesControllerQuotaFull")


def controller_rule(helm) -> dict:
    docs = render_controller(helm, *controller_values("prod", {"metrics.prometheusRule.enabled": True,
                                                               "metrics.serviceMonitor.enabled": True}),
                             namespace=NAMESPACE)
    [rule] = [d for d in docs if d["kind"] == "PrometheusRule"]
    return rule


def max_active_jobs() -> int:
    return yaml.safe_load((CONTROLLER_CHART / "values-prod.yaml").read_text())["controller"]["maxActiveJobs"]


POD = {**CTL, "pod": "rates-controller-7d4b9-x2x9k"}
NEW_POD = {**CTL, "pod": "rates-controller-5f8c7-q7w2m"}  # after an upgrade


def healthy_controller(active_jobs: int = 1, started: str = "100x60", set_aside: str = "0x60",
                       errors: str = "0x60", slots_in_use: int | None = None, held: int = 0,
                       retried: str = "0x60") -> list[dict]:
    slots = active_jobs if slots_in_use is None else slots_in_use
    return [series("up", CTL, "1x60"),
            # what the controller exports before any Job ended (metrics.JOB_RESULTS); one loads a minute
            series("rates_controller_jobs_finished_total", {**POD, "result": "succeeded"}, "0+1x60"),
            series("rates_controller_jobs_finished_total", {**POD, "result": "retried"}, retried),
            series("rates_controller_jobs_finished_total", {**POD, "result": "set-aside"}, "0x60"),
            series("process_start_time_seconds", POD, started),
            series("rates_controller_active_jobs", CTL, f"{active_jobs}x60"),
            series("rates_controller_slots_in_use", CTL, f"{slots}x60"),
            series("rates_controller_messages_held", CTL, f"{held}x60"),
            # what the controller exports before anything was set aside (metrics.SET_ASIDE_REASONS)
            series("rates_controller_files_set_aside_total", {**POD, "reason": "invalid_file"}, set_aside),
            series("rates_controller_files_set_aside_total", {**POD, "reason": "poison"}, "0x60"),
            series("rates_controller_errors_total", {**CTL, "operation": "receive"}, errors)]


def test_a_healthy_controller_raises_no_alert(helm, promtool, tmp_path):
    run_promtool(promtool, tmp_path, controller_rule(helm), [
        case(healthy_controller(active_jobs=max_active_jobs() - 1), quiet(CONTROLLER_ALERTS, "50m"))])


def test_controller_alerts_fire_on_their_trouble_after_their_for(helm, promtool, tmp_path):
    full = max_active_jobs()
    run_promtool(promtool, tmp_path, controller_rule(helm), [
        # The first file set aside (0 -> 1 at minute 10) raises the alert at once, with its
        # reason, and it ends once the 15-minute window has moved past it.
        case(healthy_controller(set_aside="0x10 1x50"), [
            ("RatesControllerFileSetAside", "9m", []),
            ("RatesControllerFileSetAside", "11m", [{"severity": "warning", "namespace": NAMESPACE, "reason": "invalid_file"}]),
            ("RatesControllerFileSetAside", "30m", [])]),
        # A new pod whose first pass set a file aside before its first scrape: its series
        # starts at 1, with no increase to see; it alerts while the process is young.
        case([*healthy_controller(started="100x10 _x50", set_aside="0x10 _x50"),
              series("process_start_time_seconds", NEW_POD, "_x10 590x50"),
              series("rates_controller_files_set_aside_total", {**NEW_POD, "reason": "invalid_file"}, "_x10 1x50"),
              series("rates_controller_files_set_aside_total", {**NEW_POD, "reason": "poison"}, "_x10 0x50")], [
            ("RatesControllerFileSetAside", "9m", []),
            ("RatesControllerFileSetAside", "11m", [{"severity": "warning", "namespace": NAMESPACE, "reason": "invalid_file"}]),
            ("RatesControllerFileSetAside", "24m", [{"severity": "warning", "namespace": NAMESPACE, "reason": "invalid_file"}]),
            ("RatesControllerFileSetAside", "30m", [])]),
        # A container restarted in its pod: the same series starts again at 1, which
        # increase() counts as a reset; once the process is past the window, nothing.
        case(healthy_controller(started="100x20 1190x40", set_aside="2x20 1x40"), [
            ("RatesControllerFileSetAside", "19m", []),
            ("RatesControllerFileSetAside", "21m", [{"severity": "warning", "namespace": NAMESPACE, "reason": "invalid_file"}]),
            ("RatesControllerFileSetAside", "50m", [])]),
        # Restarted at minutes 11, 17 and 23 (a loop that stalls after each start): the
        # third restart raises the alert, which ends 30 minutes after the last one.
        case(healthy_controller(started="100x10 700x5 1000x5 1300x40"), [
            ("RatesControllerRestarting", "20m", []),
            ("RatesControllerRestarting", "25m", [{"severity": "critical", "namespace": NAMESPACE}]),
            ("RatesControllerRestarting", "55m", [])]),
        # An upgrade: a new pod, whose own process starts once.
        case([*healthy_controller(started="100x10 _x50"),
              series("process_start_time_seconds", NEW_POD, "_x10 700x50")],
             quiet({"RatesControllerRestarting"}, "15m")),
        # A Job failed at minute 10 and its file got another: warned at once, for the hour
        # the retry stays in the window, as a file whose Jobs keep failing is set aside hours later.
        case(healthy_controller(retried="0x10 1x70"), [
            ("RatesControllerJobsRetried", "9m", []),
            ("RatesControllerJobsRetried", "11m", [{"severity": "warning", "namespace": NAMESPACE}]),
            ("RatesControllerJobsRetried", "65m", [{"severity": "warning", "namespace": NAMESPACE}]),
            ("RatesControllerJobsRetried", "75m", []),
            *quiet({"RatesControllerFileSetAside"}, "11m")]),
        # A new pod whose first pass retried a Job that ended during the upgrade, before its
        # first scrape: its series starts at 1; it alerts while the process is young.
        case([*healthy_controller(started="100x10 _x50", retried="0x10 _x50"),
              series("process_start_time_seconds", NEW_POD, "_x10 590x80"),
              series("rates_controller_jobs_finished_total", {**NEW_POD, "result": "retried"}, "_x10 1x80")], [
            ("RatesControllerJobsRetried", "9m", []),
            ("RatesControllerJobsRetried", "11m", [{"severity": "warning", "namespace": NAMESPACE}]),
            ("RatesControllerJobsRetried", "65m", [{"severity": "warning", "namespace": NAMESPACE}]),
            ("RatesControllerJobsRetried", "75m", [])]),
        # Receives fail every minute from minute 5 on: warned after 15 minutes of it.
        case(healthy_controller(errors="0x5 1+1x55"), [
            ("RatesControllerErrors", "15m", []),
            ("RatesControllerErrors", "25m", [{"severity": "warning", "namespace": NAMESPACE, "operation": "receive"}])]),
        case(healthy_controller(active_jobs=full), [
            ("RatesControllerAtCapacity", "20m", []),
            ("RatesControllerAtCapacity", "35m", [{"severity": "warning", "namespace": NAMESPACE}])]),
        # Failed files waiting for their retries hold every slot, with no Job running.
        case(healthy_controller(active_jobs=0, slots_in_use=full), [
            ("RatesControllerAtCapacity", "20m", []),
            ("RatesControllerAtCapacity", "35m", [{"severity": "warning", "namespace": NAMESPACE}])]),
        # A full Job quota holds uploads: warned after 30 minutes of it.
        case(healthy_controller(active_jobs=0, held=2), [
            ("RatesControllerQuotaFull", "20m", []),
            ("RatesControllerQuotaFull", "35m", [{"severity": "warning", "namespace": NAMESPACE}])]),
        case([series("up", CTL, "0x20")], [
            ("RatesControllerDown", "4m", []), ("RatesControllerDown", "6m", [{"severity": "critical", "namespace": NAMESPACE}])]),
    ])


def test_controller_alerts_name_the_reason_and_the_operation(helm, promtool, tmp_path):
    rule = controller_rule(helm)
    run_promtool(promtool, tmp_path, rule, [
        annotated_case(healthy_controller(set_aside="0x10 1x50", errors="0x5 1+1x55"), "25m", [
            ("RatesControllerErrors", {"severity": "warning", "namespace": NAMESPACE, "operation": "receive"},
             expanded(rule, "RatesControllerErrors", {"{{ $labels.operation }}": "receive"}))]),
        annotated_case(healthy_controller(set_aside="0x10 1x50"), "11m", [
            ("RatesControllerFileSetAside", {"severity": "warning", "namespace": NAMESPACE, "reason": "invalid_file"},
             expanded(rule, "RatesControllerFileSetAside", {"{{ $labels.reason }}": "invalid_file"}))]),
    ], annotations=True)


def test_rules_without_the_service_monitor_are_refused(helm):
    # Their series would never exist, and the Down alerts would fire for ever.
    proc = helm("template", "rates-api", str(API_CHART), "--set", "metrics.prometheusRule.enabled=true", check=False)
    assert proc.returncode != 0 and "needs metrics.serviceMonitor.enabled" in proc.stderr, proc.stderr
    proc = helm("template", CONTROLLER, str(CONTROLLER_CHART),
                *controller_values("prod", {"metrics.prometheusRule.enabled": True}), check=False)
    assert proc.returncode != 0 and "needs metrics.serviceMonitor.enabled" in proc.stderr, proc.stderr


@pytest.mark.parametrize("chart", ["api", "controller"])
def test_rules_are_off_by_default(helm, chart):
    if chart == "api":
        docs = yaml.safe_load_all(helm("template", "rates-api", str(API_CHART)).stdout)
    else:
        docs = render_controller(helm, *controller_values("prod"))
    assert not [d for d in docs if d and d["kind"] in ("PrometheusRule", "ServiceMonitor")]


@pytest.mark.parametrize("interval, timeout, refused", [
    ("10s", "30s", True), ("500ms", "1s", True), ("1m30s", "1m", False), ("1m", "60s", False)])
def test_a_scrape_timeout_above_its_interval_is_refused(helm, interval, timeout, refused):
    # Prometheus refuses such a scrape: the release would never be scraped, and its Down alert fire.
    for args in (["rates-api", str(API_CHART)],
                 [CONTROLLER, str(CONTROLLER_CHART), *controller_values("prod")]):
        proc = helm("template", *args, "--set", "metrics.serviceMonitor.enabled=true",
                    "--set", f"metrics.serviceMonitor.interval={interval}",
                    "--set", f"metrics.serviceMonitor.scrapeTimeout={timeout}", check=False)
        assert (proc.returncode != 0) == refused, proc.stderr
        if refused:
            assert f"scrapeTimeout ({timeout}) exceeds its interval ({interval})" in proc.stderr
        else:
            [monitor] = [d for d in yaml.safe_load_all(proc.stdout) if d and d["kind"] == "ServiceMonitor"]
            assert monitor["spec"]["endpoints"][0]["interval"] == interval

