"""ratesctl.k8s_tools without building anything: reading each tool's version output, the
replace directives a build carries over, and which tools a call provides."""

import os
import stat
import threading
from pathlib import Path

import pytest
from click.testing import CliRunner

from ratesctl import k8s_tools
from tests.support.poll import wait_for
from ratesctl.k8s_tools import (
    ALL_TOOLS, INFRA_TOOLS, KNOWN_TOOLS, Replace, ToolsUnavailable, gomod_replaces, load_versions,
    module_replaces, parse_version, prometheus_module_version, resolve_tools,
)

# The pins, so that a version bump in versions.json does not break these for the wrong reason.
PIN = {tool: load_versions()[tool] for tool in ("terraform", "tflint", "skaffold", "promtool", "helm4")}
NEWER_TERRAFORM = "{}.{}.0".format(PIN["terraform"].split(".")[0], int(PIN["terraform"].split(".")[1]) + 1)
# What the pinned release binaries print (captured from them), and what a build that
# differs must not pass for.
REAL_OUTPUTS = {
    "terraform": (f"Terraform v{PIN['terraform']}\non linux_amd64\n", PIN["terraform"]),
    "tflint": (f"TFLint version {PIN['tflint']}\n+ ruleset.terraform (0.15.0-bundled)\n", PIN["tflint"]),
    "skaffold": (f"v{PIN['skaffold']}\n", PIN["skaffold"]),
    "promtool": (f"promtool, version {PIN['promtool']} (branch: HEAD, revision: unknown)\n  build user:       \n"
                 "  go version:       go1.26.8\n  platform:         linux/amd64\n", PIN["promtool"]),
    "helm": ("v3.22.0\n", "3.22.0"),
    "helm4": (f"v{PIN['helm4']}\n", PIN["helm4"]),
    "kubectl": ("Client Version: v1.34.4\nKustomize Version: v5.7.1\n", "1.34.4"),
}


@pytest.mark.parametrize("tool", sorted(REAL_OUTPUTS))
def test_versions_are_read_from_real_output(tool):
    output, version = REAL_OUTPUTS[tool]
    assert parse_version(tool, output) == version


@pytest.mark.parametrize("tool, output, version", [
    # terraform built without its release flag; the ruleset's version is not tflint's;
    # skaffold built without ldflags prints no version at all.
    ("terraform", f"Terraform v{PIN['terraform']}-dev\non linux_amd64\n", f"{PIN['terraform']}-dev"),
    ("tflint", f"+ ruleset.terraform ({PIN['tflint']}-bundled)\n", None),
    ("skaffold", "\n", None),
    # promtool built without ldflags: an empty version, and Go's version is not its
    ("promtool", "promtool, version  (branch: , revision: unknown)\n  go version:       go1.26.8\n", None),
    ("skaffold", f"v{PIN['skaffold']}-3-g95fb592-dirty\n", f"{PIN['skaffold']}-3-g95fb592-dirty"),
    # a newer terraform says it is out of date, naming the pin: still the newer one
    ("terraform", f"Terraform v{NEWER_TERRAFORM}\non linux_amd64\n\nYour version of Terraform is out of date! "
                  f"The latest version\nis {PIN['terraform']}.\n", NEWER_TERRAFORM),
])
def test_a_build_that_differs_does_not_pass_for_the_pin(tool, output, version):
    found = parse_version(tool, output)
    assert found == version
    assert not k8s_tools._matches(tool, found, load_versions()[tool])


def test_every_known_tool_has_a_pin_and_a_version_command():
    versions = load_versions()
    for tool in KNOWN_TOOLS:
        assert k8s_tools._pinned(tool, versions), tool
        assert tool in k8s_tools._VERSION_ARGS
        assert k8s_tools._group(tool) in k8s_tools._BUILDS, tool  # and a way to build it
    assert set(INFRA_TOOLS).isdisjoint(ALL_TOOLS)
    # each infrastructure tool is its own group, with a cache directory of its own
    dirs = {k8s_tools._cache_dir(t, versions).name for t in INFRA_TOOLS}
    assert dirs == {f"{tool}-v{version}" for tool, version in PIN.items()}


GOMOD = """module example.com/tool/v2

go 1.24.1

// broken upstream, see https://example.com/issue/1
exclude github.com/karrick/godirwalk v1.17.0

replace github.com/imdario/mergo => github.com/imdario/mergo v0.3.16

replace github.com/docker/docker => github.com/docker/docker v27.5.1+incompatible // pinned

replace (
	github.com/a/one v1.2.0 => github.com/a/one v1.2.1
	github.com/b/fork => github.com/someone/fork v0.1.0

	// a local checkout is no use to a module that requires this one
	github.com/c/local => ../local
)

replace example.com/tool/v2/internal/backend/s3 => ./internal/backend/s3

require (
	github.com/imdario/mergo v1.0.0
	github.com/docker/docker v28.0.0+incompatible
)
"""


def test_replace_directives_are_read_from_a_gomod():
    assert gomod_replaces(GOMOD) == [
        Replace("github.com/imdario/mergo", "github.com/imdario/mergo", "v0.3.16"),
        Replace("github.com/docker/docker", "github.com/docker/docker", "v27.5.1+incompatible"),
        Replace("github.com/a/one v1.2.0", "github.com/a/one", "v1.2.1"),
        Replace("github.com/b/fork", "github.com/someone/fork", "v0.1.0"),
        Replace("github.com/c/local", "../local", ""),
        Replace("example.com/tool/v2/internal/backend/s3", "./internal/backend/s3", ""),
    ]


def test_only_replacements_with_a_module_version_are_carried_over():
    assert module_replaces(GOMOD) == {
        "github.com/imdario/mergo": "github.com/imdario/mergo v0.3.16",
        "github.com/docker/docker": "github.com/docker/docker v27.5.1+incompatible",
        "github.com/a/one v1.2.0": "github.com/a/one v1.2.1",
        "github.com/b/fork": "github.com/someone/fork v0.1.0",
    }


def test_a_malformed_replace_is_an_error_not_a_silent_skip():
    with pytest.raises(ValueError, match="not a replace directive"):
        gomod_replaces("replace github.com/x/y github.com/x/z v1.0.0\n")


def test_the_builders_gomod_gets_the_replacements(tmp_path, monkeypatch):
    """What _Builder.build writes for `replaces`, checked without running go."""
    written = {}

    def fake_run(self, args, cwd, logfile):
        if args[1:3] == ["mod", "tidy"]:
            written["go.mod"] = (cwd / "go.mod").read_text()
        if args[1] == "build":
            out = Path(args[args.index("-o") + 1])
            out.write_text("#!/bin/sh\n")
        return ""

    monkeypatch.setattr(k8s_tools._Builder, "_run", fake_run)
    builder = k8s_tools._Builder(Path("/bin/true"), log=lambda _: None)
    builder.build("example.com/tool/v2", "v2.0.0", {"tool": "example.com/tool/v2/cmd/tool"},
                  tmp_path / "out", replaces=module_replaces(GOMOD))
    gomod = written["go.mod"]
    assert "require example.com/tool/v2 v2.0.0" in gomod
    assert "\tgithub.com/imdario/mergo => github.com/imdario/mergo v0.3.16\n" in gomod
    assert "\tgithub.com/a/one v1.2.0 => github.com/a/one v1.2.1\n" in gomod
    assert "../local" not in gomod and "./internal" not in gomod
    assert (tmp_path / "out" / "tool").exists()


# --- which tools a call provides ---------------------------------------------------------

def fake_tool(directory: Path, name: str, output: str) -> Path:
    path = directory / name
    path.write_text(f"#!/bin/sh\ncat <<'EOF'\n{output}EOF\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


@pytest.fixture
def isolated(tmp_path, monkeypatch):
    """PATH with only a directory of fake tools (and sh), an empty cache."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    monkeypatch.setenv("PATH", f"{bindir}:/usr/bin:/bin")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("KUBEBUILDER_ASSETS", raising=False)
    monkeypatch.setenv("GO", str(tmp_path / "no-go"))  # nothing gets built
    return bindir


def test_only_the_tools_asked_for_are_resolved(isolated):
    fake_tool(isolated, "tflint", REAL_OUTPUTS["tflint"][0])
    fake_tool(isolated, "terraform", REAL_OUTPUTS["terraform"][0])
    found = resolve_tools(build=False, tools=("terraform", "tflint"))
    assert list(found) == ["terraform", "tflint"]
    assert {t.source for t in found.values()} == {"PATH"}
    assert found["tflint"].path == (isolated / "tflint").resolve()
    assert found["terraform"].version == PIN["terraform"]


def test_a_tool_of_another_version_is_missing_and_named(isolated):
    fake_tool(isolated, "tflint", "TFLint version 0.63.0\n")
    fake_tool(isolated, "terraform", f"Terraform v{PIN['terraform']}-dev\non linux_amd64\n")
    said = []
    with pytest.raises(ToolsUnavailable) as exc:
        resolve_tools(build=False, tools=("terraform", "tflint"), log=said.append)
    assert f"passed over: PATH's tflint ({isolated / 'tflint'}) reports 0.63.0, not {PIN['tflint']}" in said
    assert f"terraform {PIN['terraform']}, tflint {PIN['tflint']}" in str(exc.value)
    assert "etcd" not in str(exc.value).split("\n")[0]
    with pytest.raises(ToolsUnavailable, match="No Go toolchain found"):
        resolve_tools(build=True, tools=("tflint",))


def test_unknown_tools_are_refused(isolated):
    with pytest.raises(ValueError, match="unknown tool"):
        resolve_tools(build=False, tools=("terraform", "terragrunt"))


def test_the_command_provides_named_tools_and_keeps_its_default(isolated):
    from ratesctl.cli import cli

    fake_tool(isolated, "skaffold", REAL_OUTPUTS["skaffold"][0])
    runner = CliRunner()
    named = runner.invoke(cli, ["k8s-tools", "--check", "--tool", "skaffold"])
    assert named.exit_code == 0, named.output
    (line,) = named.output.splitlines()
    assert line.split()[:3] == ["skaffold", f"v{PIN['skaffold']}", "PATH"]

    default = runner.invoke(cli, ["k8s-tools", "--check"])  # the Kubernetes set, none here
    assert default.exit_code == 1
    first = default.output.splitlines()[0]
    assert "etcd" in first and "kubeconform" in first and "skaffold" not in first

    every = runner.invoke(cli, ["k8s-tools", "--check", "--all"])
    assert every.exit_code == 1
    assert "skaffold" not in every.output.splitlines()[0]  # found on PATH
    assert f"terraform {PIN['terraform']}" in every.output and "etcd" in every.output

    bad = runner.invoke(cli, ["k8s-tools", "--tool", "terragrunt"])
    assert bad.exit_code == 2 and "terragrunt" in bad.output


def test_version_commands_run_in_an_empty_directory_without_update_checks(isolated, tmp_path,
                                                                          monkeypatch):
    """tflint --version reads the .tflint.hcl of its directory and checks for updates online
    unless told not to; the version run must do neither."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".tflint.hcl").write_text("this is not HCL {")
    probe = isolated / "tflint"
    probe.write_text('#!/bin/sh\n[ -e .tflint.hcl ] && exit 1\n'
                     '[ "$TFLINT_DISABLE_VERSION_CHECK" = 1 ] || exit 1\n'
                     '[ "$CHECKPOINT_DISABLE" = 1 ] || exit 1\n'
                     f'echo "TFLint version {PIN["tflint"]}"\n')
    probe.chmod(0o755)
    assert k8s_tools.binary_version("tflint", probe) == PIN["tflint"]
    assert "TFLINT_DISABLE_VERSION_CHECK" not in os.environ  # only the child's environment


@pytest.mark.parametrize("version, module", [("3.16.0", "v0.316.0"), ("3.0.1", "v0.300.1"), ("3.100.2", "v0.400.2")])
def test_a_prometheus_release_maps_to_its_go_module_version(version, module):
    assert prometheus_module_version(version) == module


@pytest.mark.parametrize("version", ["2.53.0", "3.17.0-rc.0", "v3.16.0"])
def test_a_pin_with_no_go_module_version_is_refused_with_why(version):
    with pytest.raises(ToolsUnavailable, match="only a Prometheus 3.x.y release"):
        prometheus_module_version(version)


def test_a_damaged_cached_build_is_named_and_built_again(isolated, tmp_path, monkeypatch):
    versions = load_versions()
    cached = k8s_tools._cache_dir("tflint", versions) / "tflint"
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"\x7fELF" + b"\0" * 64)  # cut off, as by a full disk
    cached.chmod(0o755)
    said = []
    with pytest.raises(ToolsUnavailable):
        resolve_tools(build=False, tools=("tflint",), log=said.append)
    assert said == [f"passed over: cache's tflint ({cached}) reports no version (does it run?), not {PIN['tflint']}"]

    def build(versions, builder, outdir):
        fake_tool(tmp_path, "tflint", REAL_OUTPUTS["tflint"][0])
        os.replace(tmp_path / "tflint", outdir / "tflint")

    monkeypatch.setattr(k8s_tools, "_BUILDS", {**k8s_tools._BUILDS, "tflint": build})
    monkeypatch.setenv("GO", "/bin/true")
    tool = resolve_tools(tools=("tflint",), log=said.append)["tflint"]
    assert (tool.path, tool.source, tool.version) == (cached, "built", PIN["tflint"])
    assert resolve_tools(build=False, tools=("tflint",))["tflint"].source == "cache"


def test_a_cache_that_cannot_be_written_is_named_not_an_internal_error(isolated, tmp_path, monkeypatch):
    (tmp_path / "a-file").write_text("")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "a-file" / "cache"))
    monkeypatch.setenv("GO", "/bin/true")
    with pytest.raises(ToolsUnavailable, match="The cache cannot be used: .*a-file.*XDG_CACHE_HOME"):
        resolve_tools(tools=("tflint",), log=lambda _: None)
    # Anything else that fails is not blamed on the cache.
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))

    def build(versions, builder, outdir):
        raise FileNotFoundError(2, "No such file or directory", str(tmp_path / "broken-go"))

    monkeypatch.setattr(k8s_tools, "_BUILDS", {**k8s_tools._BUILDS, "tflint": build})
    with pytest.raises(FileNotFoundError, match="broken-go"):
        resolve_tools(tools=("tflint",), log=lambda _: None)


def test_a_build_waiting_for_another_says_so(isolated, monkeypatch):
    import fcntl

    root = k8s_tools.cache_root()
    root.mkdir(parents=True)
    said = []
    with (root / ".lock").open("w") as other:
        fcntl.flock(other, fcntl.LOCK_EX)
        waiter = threading.Thread(target=lambda: k8s_tools._build_lock(said.append).__enter__())
        waiter.start()
        wait_for(lambda: said, timeout=10, what="the waiting note")
        assert said == [f"waiting for another process's build to finish ({root / '.lock'}) ..."]
    waiter.join(timeout=10)
    assert not waiter.is_alive()  # it got the lock once the other let go


# --- building side by side ------------------------------------------------------------------

def test_every_buildable_group_has_a_place_in_the_build_order():
    assert sorted(k8s_tools._SLOWEST_FIRST) == sorted(k8s_tools._BUILDS)


def fake_build(tmp_path: Path, tool: str, before=lambda: None):
    """A _BUILDS entry that runs ``before`` and then puts a fake ``tool`` into place."""
    def build(versions, builder, outdir):
        before()
        outdir.mkdir(parents=True, exist_ok=True)
        fake_tool(tmp_path, tool, REAL_OUTPUTS[tool][0])
        os.replace(tmp_path / tool, outdir / tool)
    return build


def test_two_groups_are_built_at_once(isolated, tmp_path, monkeypatch):
    """A cold cache builds two groups side by side: skaffold's build does not end until
    tflint's has begun (it would wait forever, one at a time)."""
    started = {name: threading.Event() for name in ("skaffold", "tflint")}

    def builds(name, other):
        def before():
            started[name].set()
            assert started[other].wait(timeout=30), f"{other} did not start while {name} was building"
        return fake_build(tmp_path, name, before)

    monkeypatch.setattr(k8s_tools, "_BUILDS", {**k8s_tools._BUILDS, "tflint": builds("tflint", "skaffold"),
                                               "skaffold": builds("skaffold", "tflint")})
    monkeypatch.setenv("GO", "/bin/true")
    found = resolve_tools(tools=("tflint", "skaffold"), log=lambda _: None)
    assert {t.source for t in found.values()} == {"built"}


def test_the_slowest_build_starts_first(isolated, tmp_path, monkeypatch):
    """So that the last to start is a short one. One at a time, to see the order."""
    monkeypatch.setattr(k8s_tools, "PARALLEL_BUILDS", 1)
    order = []
    monkeypatch.setattr(k8s_tools, "_BUILDS", {
        **k8s_tools._BUILDS, **{name: fake_build(tmp_path, name, lambda name=name: order.append(name))
                                for name in ("tflint", "skaffold", "helm4")}})
    monkeypatch.setenv("GO", "/bin/true")
    resolve_tools(tools=("tflint", "helm4", "skaffold"), log=lambda _: None)
    assert order == ["skaffold", "helm4", "tflint"]  # not the order asked in


def test_after_a_failed_build_no_other_starts_and_the_failure_is_raised(isolated, tmp_path, monkeypatch):
    monkeypatch.setattr(k8s_tools, "PARALLEL_BUILDS", 1)
    called = []

    def broken(versions, builder, outdir):
        called.append("skaffold")
        raise ToolsUnavailable("skaffold's build failed")

    monkeypatch.setattr(k8s_tools, "_BUILDS", {**k8s_tools._BUILDS, "skaffold": broken,
                                               "tflint": fake_build(tmp_path, "tflint", lambda: called.append("tflint"))})
    monkeypatch.setenv("GO", "/bin/true")
    with pytest.raises(ToolsUnavailable, match="skaffold's build failed"):
        resolve_tools(tools=("tflint", "skaffold"), log=lambda _: None)
    assert called == ["skaffold"]


def test_promtool_is_built_without_the_service_discoveries(tmp_path, monkeypatch):
    """The SDKs of every cloud's service discovery were most of promtool's cold build;
    `check rules` and `test rules` use none of them."""
    runs = []

    def fake_run(self, args, cwd, logfile):
        runs.append(args)
        if args[1:3] == ["mod", "download"]:
            (tmp_path / "VERSION").write_text(PIN["promtool"] + "\n")
            return f'{{"Dir": "{tmp_path}"}}'
        if args[1] == "build":
            Path(args[args.index("-o") + 1]).write_text("#!/bin/sh\n")
        return ""

    monkeypatch.setattr(k8s_tools._Builder, "_run", fake_run)
    builder = k8s_tools._Builder(Path("/bin/true"), log=lambda _: None)
    k8s_tools._build_promtool(load_versions(), builder, tmp_path / "out")
    (build,) = [args for args in runs if args[1] == "build"]
    assert build[build.index("-tags") + 1] == "remove_all_sd"
