"""checkov, a standard misconfiguration scanner, over what is deployed: the three
Dockerfiles (and, below, every environment's rendered charts). Every check it runs must
pass or be skipped here, by name, with the reason."""

import json

from tests.support.infra import REPO_ROOT, run

DOCKERFILES = ["api/Dockerfile", "ingest-job/Dockerfile", "controller/Dockerfile"]

DOCKERFILE_SKIPS = {
    "CKV_DOCKER_2": "no HEALTHCHECK: Kubernetes ignores it; the API chart's probes and the Jobs' exit codes "
                    "say whether a container is well",
}


def scan(checkov, framework: str, files: list, skips: dict[str, str]) -> dict:
    args = [checkov, "--framework", framework, "--output", "json", "--skip-download"]
    for path in files:
        args += ["--file", path]
    if skips:
        args += ["--skip-check", ",".join(skips)]
    result = run(args, REPO_ROOT, timeout=600)
    report = json.loads(result.stdout)
    return report[0] if isinstance(report, list) else report


def failures(report: dict) -> list[str]:
    return [f"{c['check_id']} {c['file_path']} {c['resource']}: {c['check_name']}"
            for c in report["results"]["failed_checks"]]


def test_the_dockerfiles_pass_checkov(checkov):
    report = scan(checkov, "dockerfile", DOCKERFILES, DOCKERFILE_SKIPS)
    assert failures(report) == []
    # Each file was read, and the checks that matter here ran and passed on each.
    passed = {(c["file_path"].lstrip("/"), c["check_id"]) for c in report["results"]["passed_checks"]}
    for dockerfile in DOCKERFILES:
        assert (dockerfile, "CKV_DOCKER_3") in passed  # a USER, so not root
        assert (dockerfile, "CKV_DOCKER_8") in passed  # the last USER is not root
