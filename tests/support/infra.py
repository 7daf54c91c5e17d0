"""Infrastructure-code tools for tests: terraform, tflint (pinned Go binaries, via
ratesctl.k8s_tools) and checkov (a pinned PyPI package in its own cached virtualenv).

checkov gets a virtualenv of its own because it pins dozens of packages (boto3 among them)
that must not move the project's own pins. The virtualenv lives in
``${XDG_CACHE_HOME:-~/.cache}/rates-platform/checkov-<version>`` and is created once; a
``checkov`` on PATH with the pinned version is used instead when there is one.
"""

from __future__ import annotations

import fcntl
import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import hcl2
import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
TERRAFORM_ROOT = REPO_ROOT / "terraform-eks"
CHECKOV_CONSTRAINTS = REPO_ROOT / "constraints-checkov.txt"

# Not a secret: moto's fixed account id, so ARNs computed here match the ones moto returns.
MOTO_ACCOUNT = "123456789012"


def _checkov_version(path: str) -> str | None:
    try:
        out = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired):
        return None
    match = re.search(r"\d+\.\d+\.\d+", out.stdout)
    return match.group(0) if match else None


def _usable(venv: Path) -> bool:
    """The virtualenv's checkov names its own python, and that python runs: neither holds
    once the cache is restored under another path or the base interpreter is gone."""
    python = venv / "bin" / "python"
    try:
        # pip writes "#!<python>", or for a long path a /bin/sh line that execs "<python>".
        head = (venv / "bin" / "checkov").read_text()[:4096].splitlines()[:3]
        ran = subprocess.run([str(python), "-c", ""], timeout=60).returncode == 0
    except (OSError, UnicodeError, subprocess.TimeoutExpired):
        return False
    names_it = head[:1] == [f"#!{python}"] or any(f"'{python}'" in line for line in head[1:])
    return names_it and ran


def provide_checkov() -> Path:
    """The pinned checkov: from PATH, the cache, or installed into the cache now (about a minute)."""
    from ratesctl.k8s_tools import cache_root, load_versions

    version = load_versions()["checkov"]
    # Keyed by its pins too: checkouts with other pins (a branch that bumps them) each get
    # their own, instead of taking turns to make one over while another runs it.
    key = hashlib.sha256(CHECKOV_CONSTRAINTS.read_bytes()).hexdigest()[:12]
    on_path = shutil.which("checkov")
    if on_path and _checkov_version(on_path) == version:
        return Path(on_path)
    cache = cache_root().parent  # ${XDG_CACHE_HOME:-~/.cache}/rates-platform
    venv = cache / f"checkov-{version}-{key}"
    binary, done = venv / "bin" / "checkov", venv / ".complete"
    cache.mkdir(parents=True, exist_ok=True)
    with (cache / ".checkov.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (done.exists() and _usable(venv)):
            # A virtualenv cannot be moved once made, so it is built in place; the marker
            # says it finished, and an unfinished, moved or orphaned one is started over.
            shutil.rmtree(venv, ignore_errors=True)
            subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
            subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet",
                            "--disable-pip-version-check", "-c", str(CHECKOV_CONSTRAINTS),
                            f"checkov=={version}"], check=True)
            done.touch()
        os.utime(done)  # in use: another checkout's prune leaves it be
        for other in cache.glob("checkov-*/.complete"):
            # Of other pins or versions, unused for two weeks: a checkout that needs one
            # again makes it again.
            if other != done and time.time() - other.stat().st_mtime > 14 * 86400:
                shutil.rmtree(other.parent, ignore_errors=True)
    return binary


def pinned_tool(name: str) -> Path:
    """A pinned Go tool (built once from its Go module if missing), or the test fails with why."""
    from ratesctl.k8s_tools import ToolsUnavailable, resolve_tools

    try:
        return resolve_tools(tools=(name,))[name].path
    except ToolsUnavailable as exc:
        pytest.fail(str(exc), pytrace=False)


# What the README's commands give beside a tfvars file, which no tfvars file names.
PROD_ALARM_ACTIONS = '-var=alarm_actions=["arn:aws:sns:eu-west-1:123456789012:rates-on-call"]'


def given_vars(stack: str, tfvars: Path) -> list[str]:
    """The -var arguments the README's commands give ``stack`` beside ``tfvars``: the
    cluster's administrators, and whom production's alarms notify."""
    if stack == "cluster":
        return ['-var=admin_principal_arns=["arn:aws:iam::123456789012:role/platform-admins"]']
    if tfvars.stem == "prod":
        return [PROD_ALARM_ACTIONS]
    return []


@pytest.fixture(scope="session")
def terraform() -> Path:
    return pinned_tool("terraform")


@pytest.fixture(scope="session")
def tflint() -> Path:
    return pinned_tool("tflint")


@pytest.fixture(scope="session")
def promtool() -> Path:
    return pinned_tool("promtool")


@pytest.fixture(scope="session")
def checkov() -> Path:
    return provide_checkov()


def terraform_env(tmp_path: Path) -> dict[str, str]:
    """No user CLI config, plugin cache or credentials: what runs must work offline."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TF_", "AWS_"))}
    env["TF_CLI_CONFIG_FILE"] = os.devnull
    env["TF_IN_AUTOMATION"] = "1"
    env["TF_DATA_DIR"] = str(tmp_path / ".terraform")
    env["CHECKPOINT_DISABLE"] = "1"
    return env


def run(args: list, cwd: Path, env: dict[str, str] | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([str(a) for a in args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)


def apply_module(terraform: Path, module: Path, variables: dict, tmp_path: Path) -> dict:
    """Apply a provider-less module with ``variables``; its outputs as plain values.

    The module is copied, so that nothing (state, .terraform) is written into the repository.
    """
    work = tmp_path / module.name
    shutil.copytree(module, work, ignore=shutil.ignore_patterns(".terraform*", "*.tfstate*"))
    (work / "test.auto.tfvars.json").write_text(json.dumps(variables))
    env = terraform_env(tmp_path)
    for args in (["init", "-input=false", "-no-color"],
                 ["apply", "-input=false", "-auto-approve", "-no-color"]):
        result = run([terraform, *args], work, env)
        assert result.returncode == 0, f"terraform {args[0]}:\n{result.stdout}\n{result.stderr}"
    result = run([terraform, "output", "-json", "-no-color"], work, env)
    assert result.returncode == 0, result.stderr
    return {name: out["value"] for name, out in json.loads(result.stdout).items()}


def parse_hcl(text: str) -> dict:
    """HCL as python-hcl2 reads it, strings without their quotes, comments left out."""
    options = hcl2.SerializationOptions(strip_string_quotes=True, with_comments=False)
    return hcl2.load(io.StringIO(text), serialization_options=options)


def hcl_resource(path: str, kind: str, name: str) -> dict:
    """The body of resource ``kind``.``name`` in ``path`` (relative to terraform-eks/)."""
    tree = parse_hcl((TERRAFORM_ROOT / path).read_text())
    [body] = [block[kind][name] for block in tree["resource"] if name in block.get(kind, {})]
    return body
