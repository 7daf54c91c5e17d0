"""Pinned tools: the Kubernetes set the tests use (etcd, kube-apiserver,
kube-controller-manager, kubectl, helm, kubeconform) and the infrastructure set (terraform,
tflint, skaffold, promtool).

Versions are pinned in ``versions.json`` at the repository root. ``resolve_tools()`` and
``ensure_tools()`` provide ``ALL_TOOLS`` (the Kubernetes set, what the test control plane
needs) unless given ``tools=``; ``INFRA_TOOLS`` are only provided when asked for, e.g.
``resolve_tools(tools=("terraform", "tflint"))``. For every tool the first match wins:

1. ``$KUBEBUILDER_ASSETS/<tool>`` (the directory setup-envtest lays out), if its version
   matches the pin;
2. ``<tool>`` on ``PATH``, if its version matches the pin;
3. the build cache ``${XDG_CACHE_HOME:-~/.cache}/rates-platform/k8s/<tool-version>/``;
4. a build from the tool's Go module with the local Go toolchain into that cache (one-time;
   the Kubernetes binaries take tens of minutes on a small machine).

"Matches" means the same version, except for etcd where the same minor line (3.6) is enough:
envtest bundles whichever etcd patch its Kubernetes release was tested with. A build that
reports a pre-release (terraform's "1.11.4-dev", made without its release flag) does not
match.

Two modules need more than `require`: skaffold's go.mod pins some dependencies with
replace directives, which a requiring module does not inherit, so the build carries them
over; terraform keeps its state backends in nested modules (replaced by local directories,
so left out of its module zip), which the build takes from the proxy at the pseudo-version
of the release's commit (``terraform_commit`` in versions.json: the module proxy's record of
a tag does not name its commit).

Builds happen in a temporary directory next to the cache and are renamed into place, so an
interrupted build never leaves a half-written binary; a file lock keeps two concurrent runs
from building the same thing twice.
"""

from __future__ import annotations

import dataclasses
import fcntl
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

import click

REPO_ROOT = Path(__file__).resolve().parents[2]
VERSIONS_FILE = REPO_ROOT / "versions.json"

KUBE_TOOLS = ("kube-apiserver", "kube-controller-manager", "kubectl")
# What ensure_tools() provides by default: the test control plane and the chart tests.
ALL_TOOLS = ("etcd", *KUBE_TOOLS, "helm", "kubeconform")
# Provided only when asked for by name (terraform, its linter, local development, the
# charts' alerting rules).
INFRA_TOOLS = ("terraform", "tflint", "skaffold", "promtool", "helm4")
KNOWN_TOOLS = (*ALL_TOOLS, *INFRA_TOOLS)


class ToolsUnavailable(RuntimeError):
    """The pinned tools are neither installed nor buildable here."""


@dataclasses.dataclass(frozen=True)
class Tool:
    name: str
    path: Path
    version: str
    source: str  # "KUBEBUILDER_ASSETS", "PATH", "cache" or "built"


def load_versions(path: Path = VERSIONS_FILE) -> dict[str, str]:
    return json.loads(path.read_text())


def cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "rates-platform" / "k8s"


# --- which pin, which cache directory, how to read a binary's version -----------------------


def _group(tool: str) -> str:
    return "kubernetes" if tool in KUBE_TOOLS else tool


def _pinned(tool: str, versions: dict[str, str]) -> str:
    return versions[_group(tool)].lstrip("v")


def _cache_dir(tool: str, versions: dict[str, str]) -> Path:
    group = _group(tool)
    return cache_root() / f"{group}-v{versions[group].lstrip('v')}"


_VERSION_ARGS = {
    "etcd": ["--version"],
    "kube-apiserver": ["--version"],
    "kube-controller-manager": ["--version"],
    "kubectl": ["version", "--client"],
    "helm": ["version", "--short"],
    "helm4": ["version", "--short"],
    "kubeconform": ["-v"],
    "terraform": ["version"],
    "tflint": ["--version"],
    "skaffold": ["version"],
    "promtool": ["--version"],
}

# The first x.y.z anywhere, unless the tool's own line is known; those keep a pre-release
# suffix ("1.11.4-dev"), so that a development build does not pass for the release.
_VERSION_PATTERNS = {
    "terraform": r"^Terraform v(\d+\.\d+\.\d+(?:-\S+)?)$",
    "tflint": r"^TFLint version (\d+\.\d+\.\d+(?:-\S+)?)$",
    "skaffold": r"^v(\d+\.\d+\.\d+(?:-\S+)?)$",
    "promtool": r"^promtool, version (\d+\.\d+\.\d+(?:-\S+)?) ",
}

# Asking for the version must not phone home (there is no internet here, and it would be
# slow): terraform's checkpoint and tflint's and skaffold's update checks are off.
_VERSION_ENV = {
    "CHECKPOINT_DISABLE": "1",
    "TFLINT_DISABLE_VERSION_CHECK": "1",
    "SKAFFOLD_UPDATE_CHECK": "false",
}


def parse_version(tool: str, output: str) -> str | None:
    """The version in ``output`` of ``<tool> <_VERSION_ARGS[tool]>``, or None."""
    pattern = _VERSION_PATTERNS.get(tool, r"v?(\d+\.\d+\.\d+)")
    match = re.search(pattern, output, re.M)
    return match.group(1) if match else None


def binary_version(tool: str, path: Path) -> str | None:
    """The version a binary reports, or None if it cannot be run or parsed."""
    # In an empty directory: `tflint --version` reads .tflint.hcl and `terraform version`
    # the lock file of the directory it runs in.
    with tempfile.TemporaryDirectory(prefix="tool-version-") as cwd:
        try:
            out = subprocess.run(
                [str(path), *_VERSION_ARGS[tool]], cwd=cwd, env={**os.environ, **_VERSION_ENV},
                capture_output=True, text=True, timeout=30, check=False,
            )
        except (OSError, subprocess.TimeoutExpired):
            return None
    return parse_version(tool, out.stdout + "\n" + out.stderr)


def _matches(tool: str, found: str | None, pinned: str) -> bool:
    if found is None:
        return False
    if tool == "etcd":
        return found.split(".")[:2] == pinned.split(".")[:2]
    return found == pinned


def _candidates(tool: str, versions: dict[str, str]) -> list[tuple[str, Path]]:
    """Where ``tool`` may be, in order: KUBEBUILDER_ASSETS, PATH, the cache."""
    candidates: list[tuple[str, Path]] = []
    assets = os.environ.get("KUBEBUILDER_ASSETS")
    if assets:
        candidates.append(("KUBEBUILDER_ASSETS", Path(assets) / tool))
    on_path = shutil.which(tool)
    if on_path:
        candidates.append(("PATH", Path(on_path)))
    # The cache is checked like the others: a damaged build (a full disk, a cache restored
    # elsewhere) would otherwise fail every later run with nothing naming it. It is rebuilt.
    candidates.append(("cache", _cache_dir(tool, versions) / tool))
    return [(source, path) for source, path in candidates if path.is_file() and os.access(path, os.X_OK)]


def _installed(tool: str, versions: dict[str, str]) -> Tool | None:
    """A matching binary from KUBEBUILDER_ASSETS or PATH, or a cached build."""
    pinned = _pinned(tool, versions)
    for source, path in _candidates(tool, versions):
        found = binary_version(tool, path)
        if _matches(tool, found, pinned):
            return Tool(tool, path if source == "cache" else path.resolve(), found or pinned, source)
    return None


def _passed_over(tool: str, versions: dict[str, str]) -> list[str]:
    """What was found of ``tool`` and why it was not taken, for the user."""
    return [f"{source}'s {tool} ({path}) reports {found or 'no version (does it run?)'}, "
            f"not {_pinned(tool, versions)}"
            for source, path in _candidates(tool, versions)
            for found in [binary_version(tool, path)]]


# --- building from Go modules -----------------------------------------------------------------


def find_go() -> Path | None:
    """$GO if set (only that), else `go` on PATH, else the default install location."""
    explicit = os.environ.get("GO")
    candidates = [explicit] if explicit else [shutil.which("go"), "/usr/local/go/bin/go"]
    for candidate in candidates:
        if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return Path(candidate)
    return None


def _unavailable_message(missing: list[str], versions: dict[str, str], why: str) -> str:
    wanted = ", ".join(f"{t} {_pinned(t, versions)}" for t in missing)
    return (
        f"Pinned tools missing: {wanted}.\n{why}\n"
        "Either install Go (>= 1.26.7, `go` on PATH or $GO) so they can be built once into "
        f"{cache_root()}, or download matching binaries and point at them:\n"
        "  export KUBEBUILDER_ASSETS=/path/to/dir   # with etcd, kube-apiserver, kubectl "
        "(e.g. from setup-envtest)\n"
        "  export PATH=/path/to/bin:$PATH           # any of the tools, versions must match "
        f"{VERSIONS_FILE.name}\n"
        "Then check with `ratesctl k8s-tools --check`."
    )


@dataclasses.dataclass(frozen=True)
class Replace:
    """One replace directive of a go.mod."""

    old: str          # module path, then " <version>" when the directive is for one version
    new: str          # module path, or a local directory (./x, ../x, /x)
    new_version: str  # "" for a local directory

    @property
    def local(self) -> bool:
        return not self.new_version


def gomod_replaces(gomod: str) -> list[Replace]:
    """The replace directives of a go.mod text, single-line and in blocks."""
    replaces: list[Replace] = []
    in_block = False
    for raw in gomod.splitlines():
        line = raw.split("//", 1)[0].strip()
        if in_block:
            if line == ")":
                in_block = False
                continue
            spec = line
        elif re.fullmatch(r"replace\s*\(", line):
            in_block = True
            continue
        elif line.startswith("replace ") or line.startswith("replace\t"):
            spec = line[len("replace"):].strip()
        else:
            continue
        if not spec:
            continue
        old, arrow, new = spec.partition("=>")
        if not arrow:
            raise ValueError(f"not a replace directive: {raw!r}")
        new_fields = new.split()
        if len(new_fields) == 1:
            replaces.append(Replace(" ".join(old.split()), new_fields[0], ""))
        elif len(new_fields) == 2:
            replaces.append(Replace(" ".join(old.split()), new_fields[0], new_fields[1]))
        else:
            raise ValueError(f"not a replace directive: {raw!r}")
    return replaces


def module_replaces(gomod: str) -> dict[str, str]:
    """A go.mod's replace directives that name a module version, as ``_Builder.build``'s
    ``replaces`` ({old: "new version"}); those to local directories are left out."""
    return {r.old: f"{r.new} {r.new_version}" for r in gomod_replaces(gomod) if not r.local}


def _godebug(gomod: str) -> str:
    return "\n".join(re.findall(r"^godebug .*$", gomod, re.M))


class _Builder:
    def __init__(self, go: Path, log: Callable[[str], None]):
        self.go = go
        self.log = log
        self.env = {
            **os.environ,
            "GOFLAGS": "-mod=mod -buildvcs=false",
            "GOTOOLCHAIN": "local",
            "CGO_ENABLED": "0",
            "GOWORK": "off",
        }

    def _run(self, args: list[str], cwd: Path, logfile: Path) -> str:
        with logfile.open("a") as fh:
            fh.write(f"\n$ {' '.join(args)}\n")
            fh.flush()
            proc = subprocess.run(
                args, cwd=cwd, env=self.env, stdout=subprocess.PIPE, stderr=fh, text=True,
                check=False,
            )
            fh.write(proc.stdout)
        if proc.returncode != 0:
            tail = "".join(logfile.read_text().splitlines(keepends=True)[-40:])
            raise ToolsUnavailable(f"`{' '.join(args)}` failed (log: {logfile}):\n{tail}")
        return proc.stdout

    @staticmethod
    @contextmanager
    def _scratch(outdir: Path) -> Iterator[tuple[Path, Path]]:
        """(scratch directory, log file) for work towards ``outdir``: the log beside it, the
        directory one that the stale-build sweep in resolve_tools() removes if this process
        is killed."""
        outdir.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix=f".build-{outdir.name}-", dir=outdir.parent) as tmp:
            yield Path(tmp), outdir.parent / f"build-{outdir.name}.log"

    def module_download(self, module: str, version: str, outdir: Path) -> dict:
        """`go mod download -json module@version`: its GoMod, Info, Dir, ... paths (in Go's
        module cache)."""
        with self._scratch(outdir) as (work, logfile):
            out = self._run([str(self.go), "mod", "download", "-json", f"{module}@{version}"], work, logfile)
        return json.loads(out)

    def module_gomod(self, module: str, version: str, outdir: Path) -> str:
        return Path(self.module_download(module, version, outdir)["GoMod"]).read_text()

    def build(
        self,
        module: str,
        version: str,
        binaries: dict[str, str],
        outdir: Path,
        ldflags: list[str] = (),
        replaces: dict[str, str] | None = None,
        godebug: str = "",
        tags: tuple[str, ...] = (),
    ) -> dict[str, float]:
        """Build ``binaries`` (name -> package path) of ``module@version`` into ``outdir``.

        A throwaway main module requires the module (so replace directives in its own
        go.mod, which make `go install` refuse, do not apply) and adds ``replaces``.
        ``tags`` are build tags, e.g. to leave out parts the tests never run.
        """
        timings: dict[str, float] = {}
        with self._scratch(outdir) as (work, logfile):
            lines = ["module rates-platform/k8s-tools-build", "", "go 1.24.0", ""]
            if godebug:
                lines += [godebug, ""]
            lines += [f"require {module} {version}", ""]
            if replaces:
                lines.append("replace (")
                lines += [f"\t{old} => {new}" for old, new in sorted(replaces.items())]
                lines += [")", ""]
            (work / "go.mod").write_text("\n".join(lines))
            imports = "\n".join(f'\t_ "{pkg}"' for pkg in binaries.values())
            (work / "tools.go").write_text(
                f"//go:build tools\n\npackage tools\n\nimport (\n{imports}\n)\n"
            )
            started = time.monotonic()
            self._run([str(self.go), "mod", "tidy"], work, logfile)
            timings["download"] = time.monotonic() - started
            bindir = work / "bin"
            bindir.mkdir()
            flags = " ".join(["-s", "-w", *ldflags])
            for name, pkg in binaries.items():
                self.log(f"  building {name} ({pkg}@{version}) ...")
                started = time.monotonic()
                self._run(
                    [str(self.go), "build", "-trimpath", "-ldflags", flags,
                     *(["-tags", ",".join(tags)] if tags else []),
                     "-o", str(bindir / name), pkg],
                    work, logfile,
                )
                timings[name] = time.monotonic() - started
                self.log(f"  built {name} in {timings[name]:.0f}s")
            outdir.mkdir(parents=True, exist_ok=True)
            for name in binaries:
                os.replace(bindir / name, outdir / name)  # atomic: same filesystem
        (outdir / "build-times.json").write_text(json.dumps(timings, indent=2) + "\n")
        return timings


def _build_kubernetes(versions: dict[str, str], builder: _Builder, outdir: Path) -> None:
    version = versions["kubernetes"].lstrip("v")
    major, minor, patch = version.split(".")
    gomod = builder.module_gomod("k8s.io/kubernetes", f"v{version}", outdir)
    staging = re.findall(r"^\s*(k8s\.io/\S+)\s+=>\s+\./staging/", gomod, re.M)
    if not staging:
        raise ToolsUnavailable("no staging modules found in k8s.io/kubernetes go.mod")
    ldflags = []
    for key, value in (
        ("gitVersion", f"v{version}"), ("gitMajor", major), ("gitMinor", minor),
        ("gitTreeState", "clean"), ("buildDate", "1970-01-01T00:00:00Z"),
    ):
        for pkg in ("k8s.io/client-go/pkg/version", "k8s.io/component-base/version"):
            ldflags.append(f"-X '{pkg}.{key}={value}'")
    builder.build(
        "k8s.io/kubernetes", f"v{version}",
        {t: f"k8s.io/kubernetes/cmd/{t}" for t in KUBE_TOOLS},
        outdir, ldflags=ldflags,
        # The staging modules k8s.io/api, ... are released as v0.<minor>.<patch>.
        replaces={m: f"{m} v0.{minor}.{patch}" for m in staging},
        godebug=_godebug(gomod),
    )


def _build_etcd(versions: dict[str, str], builder: _Builder, outdir: Path) -> None:
    builder.build("go.etcd.io/etcd/server/v3", f"v{versions['etcd'].lstrip('v')}",
                  {"etcd": "go.etcd.io/etcd/server/v3"}, outdir)


def _build_helm(versions: dict[str, str], builder: _Builder, outdir: Path, tool: str = "helm") -> None:
    version = versions[tool].lstrip("v")
    module = f"helm.sh/helm/v{version.split('.')[0]}"
    gomod = builder.module_gomod(module, f"v{version}", outdir)
    ldflags = [f"-X {module}/internal/version.version=v{version}",
               f"-X {module}/internal/version.gitTreeState=clean"]
    # Helm 3's default Kubernetes version (template, lint) is set at build time; Helm 4
    # reads it from the client-go version in the binary's build info.
    client_go = re.search(r"k8s\.io/client-go v0\.(\d+)\.", gomod)
    if module.endswith("/v3") and client_go:
        for pkg in (f"{module}/pkg/lint/rules", f"{module}/pkg/chartutil"):
            ldflags += [f"-X {pkg}.k8sVersionMajor=1",
                        f"-X {pkg}.k8sVersionMinor={client_go.group(1)}"]
    builder.build(module, f"v{version}", {tool: f"{module}/cmd/helm"}, outdir, ldflags=ldflags)


def _build_helm4(versions: dict[str, str], builder: _Builder, outdir: Path) -> None:
    _build_helm(versions, builder, outdir, tool="helm4")


def _build_kubeconform(versions: dict[str, str], builder: _Builder, outdir: Path) -> None:
    version = versions["kubeconform"].lstrip("v")
    builder.build(
        "github.com/yannh/kubeconform", f"v{version}",
        {"kubeconform": "github.com/yannh/kubeconform/cmd/kubeconform"}, outdir,
        ldflags=[f"-X main.version=v{version}"],
    )


def _build_tflint(versions: dict[str, str], builder: _Builder, outdir: Path) -> None:
    # Its version is a constant in tflint/meta.go (a *version.Version, which -X cannot
    # set), so the module's own source already reports it.
    builder.build(
        "github.com/terraform-linters/tflint", f"v{versions['tflint'].lstrip('v')}",
        {"tflint": "github.com/terraform-linters/tflint"}, outdir,
    )


def _build_skaffold(versions: dict[str, str], builder: _Builder, outdir: Path) -> None:
    module, version = "github.com/GoogleContainerTools/skaffold/v2", versions["skaffold"].lstrip("v")
    gomod = builder.module_gomod(module, f"v{version}", outdir)
    # Its go.mod pins e.g. github.com/imdario/mergo v0.3.16 and docker v27 with replace
    # directives; without them the build picks versions it does not compile with. (Its
    # exclude of godirwalk v1.17.0 is for Windows only and is not carried over.)
    builder.build(
        module, f"v{version}", {"skaffold": f"{module}/cmd/skaffold"}, outdir,
        ldflags=[f"-X {module}/pkg/skaffold/version.version=v{version}",
                 f"-X {module}/pkg/skaffold/version.buildDate=1970-01-01T00:00:00Z"],
        replaces=module_replaces(gomod), godebug=_godebug(gomod),
    )


def _build_promtool(versions: dict[str, str], builder: _Builder, outdir: Path) -> None:
    version = versions["promtool"].lstrip("v")
    module, module_version = "github.com/prometheus/prometheus", prometheus_module_version(version)
    # The version is stamped in with -X, so check first that this module is that release.
    released = Path(builder.module_download(module, module_version, outdir)["Dir"], "VERSION").read_text().strip()
    if released != version:
        raise ToolsUnavailable(f"{module}@{module_version} is Prometheus {released}, not {version}")
    # remove_all_sd, upstream's own build tag, leaves out the service discoveries (the AWS,
    # Azure, GCE, ... SDKs) that only `promtool check service-discovery` and `check config`'s
    # SD sections use; the tests run `check rules` and `test rules`. Cold, on 2 cores: 220 s
    # against 599 s.
    builder.build(
        module, module_version, {"promtool": f"{module}/cmd/promtool"}, outdir,
        ldflags=[f"-X github.com/prometheus/common/version.Version={version}",
                 "-X github.com/prometheus/common/version.Branch=HEAD"],
        tags=("remove_all_sd",),
    )


def prometheus_module_version(version: str) -> str:
    """The Go module version of a Prometheus 3 release: 3.16.0 is v0.316.0."""
    match = re.fullmatch(r"3\.(\d+)\.(\d+)", version)
    if not match:
        raise ToolsUnavailable(f"promtool {version}: only a Prometheus 3.x.y release maps to a Go module version")
    return f"v0.{300 + int(match[1])}.{match[2]}"


def _build_terraform(versions: dict[str, str], builder: _Builder, outdir: Path) -> None:
    """terraform's main package is its module root. Its state backends (s3, gcs, ...) and
    `internal/legacy` are nested modules that its go.mod replaces with local directories,
    so the module zip leaves them out; they come from the proxy at the pseudo-version of
    the release's commit: the tag's commit time (the proxy's .info of the tag) and
    versions.json's terraform_commit. A commit that does not belong to that time is
    refused by the proxy, so a version bump without a commit bump fails here."""
    module, version = "github.com/hashicorp/terraform", f"v{versions['terraform'].lstrip('v')}"
    commit = versions.get("terraform_commit", "")
    if not re.fullmatch(r"[0-9a-f]{12}", commit):
        raise ToolsUnavailable(
            "versions.json needs terraform_commit, the first 12 hex digits of the commit "
            f"tagged {version}, to build terraform's nested backend modules")
    info = builder.module_download(module, version, outdir)
    gomod = Path(info["GoMod"]).read_text()
    tagged = json.loads(Path(info["Info"]).read_text())["Time"]
    stamp = re.sub(r"\D", "", tagged)[:14]  # 2025-04-09T13:10:05Z -> 20250409131005
    pseudo = f"v0.0.0-{stamp}-{commit}"
    replaces = module_replaces(gomod)
    nested = [r.old for r in gomod_replaces(gomod) if r.local and r.new.startswith("./")]
    replaces.update({m: f"{m} {pseudo}" for m in nested})
    # Its go.mod's godebug lines are not carried over: tlskyber is gone from newer Go, which
    # refuses the go.mod, and winsymlink only matters on Windows.
    builder.build(
        module, version, {"terraform": module}, outdir,
        # Without dev=no it reports "1.11.4-dev".
        ldflags=[f"-X {module}/version.dev=no"],
        replaces=replaces,
    )


# How each group of versions.json is built; versions.json and this table move together.
_BUILDS = {
    "kubernetes": _build_kubernetes, "etcd": _build_etcd, "helm": _build_helm, "helm4": _build_helm4,
    "kubeconform": _build_kubeconform, "terraform": _build_terraform, "tflint": _build_tflint,
    "skaffold": _build_skaffold, "promtool": _build_promtool,
}


@contextmanager
def _build_lock(log: Callable[[str], None]) -> Iterator[None]:
    root = cache_root()
    root.mkdir(parents=True, exist_ok=True)
    with (root / ".lock").open("w") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)  # released when the file is closed
        except BlockingIOError:
            # A cold Kubernetes build takes many minutes: say why nothing seems to happen.
            log(f"waiting for another process's build to finish ({root / '.lock'}) ...")
            fcntl.flock(fh, fcntl.LOCK_EX)
        yield


def _stderr(message: str) -> None:
    # sys.__stderr__ so the note shows even under pytest's output capture
    print(f"[k8s-tools] {message}", file=sys.__stderr__ or sys.stderr, flush=True)


def _in_cache_path(filename: object) -> bool:
    """``filename`` is the cache directory, one of its parents, or inside it."""
    if not isinstance(filename, (str, os.PathLike)):
        return False
    path, root = Path(filename), cache_root()
    return path == root or path in root.parents or root in path.parents


# Two builds at a time. Each compiles on every core, but its module download (the network)
# and its links (one core) leave the machine half idle, which the other build fills.
PARALLEL_BUILDS = 2
# The slowest first, so that the last one to start is a short one (cold, on 2 cores:
# skaffold about 15 minutes, kubeconform seconds).
_SLOWEST_FIRST = ("skaffold", "kubernetes", "promtool", "helm4", "tflint", "terraform", "etcd",
                  "helm", "kubeconform")


def _build_group(group: str, members: list[str], versions: dict[str, str], builder: "_Builder",
                 log: Callable[[str], None]) -> None:
    if all(_installed(t, versions) for t in members):
        return  # another process built it while we waited for the lock
    outdir = _cache_dir(members[0], versions)
    log(f"building {group} v{versions[group].lstrip('v')} into {outdir} "
        "(one-time; the Kubernetes binaries take a while) ...")
    started = time.monotonic()
    _BUILDS[group](versions, builder, outdir)
    log(f"{group} built in {time.monotonic() - started:.0f}s")


def _build_missing(missing: list[str], versions: dict[str, str], builder: "_Builder",
                   log: Callable[[str], None]) -> None:
    """Build the groups of ``missing``, PARALLEL_BUILDS at a time. After a failure no
    further build starts; those running finish (each into its own place), then the failure
    of the earliest group in build order is raised."""
    groups = sorted(dict.fromkeys(_group(t) for t in missing), key=_SLOWEST_FIRST.index)
    failed = threading.Event()

    def build(group: str) -> None:
        if failed.is_set():
            return
        try:
            _build_group(group, [t for t in missing if _group(t) == group], versions, builder, log)
        except BaseException:
            failed.set()
            raise

    with _build_lock(log):
        for stale in cache_root().glob(".build-*"):  # left by a killed build; we hold the lock
            shutil.rmtree(stale, ignore_errors=True)
        with ThreadPoolExecutor(PARALLEL_BUILDS, thread_name_prefix="k8s-tools-build") as pool:
            futures = [pool.submit(build, group) for group in groups]
    for future in futures:
        if future.exception() is not None:
            raise future.exception()


def resolve_tools(
    *, build: bool = True, tools: tuple[str, ...] = ALL_TOOLS,
    log: Callable[[str], None] = _stderr,
) -> dict[str, Tool]:
    """Find (and with ``build``, build what is missing of) the pinned ``tools``, by default
    ``ALL_TOOLS``; any of ``KNOWN_TOOLS`` may be asked for, e.g. ``tools=INFRA_TOOLS``."""
    unknown = [t for t in tools if t not in KNOWN_TOOLS]
    if unknown:
        raise ValueError(f"unknown tool(s) {', '.join(unknown)}; known: {', '.join(KNOWN_TOOLS)}")
    tools = tuple(dict.fromkeys(tools))
    versions = load_versions()
    found = {t: _installed(t, versions) for t in tools}
    missing = [t for t, tool in found.items() if tool is None]
    if not missing:
        return found  # type: ignore[return-value]
    for t in missing:
        for note in _passed_over(t, versions):
            log(f"passed over: {note}")
    if not build:
        why = "Not building them (--check)."
        raise ToolsUnavailable(_unavailable_message(missing, versions, why))
    go = find_go()
    if go is None:
        raise ToolsUnavailable(
            _unavailable_message(missing, versions, "No Go toolchain found to build them.")
        )
    builder = _Builder(go, log)
    try:
        _build_missing(missing, versions, builder, log)
    except OSError as exc:
        if not _in_cache_path(exc.filename):
            raise
        # The cache cannot be made or written: say where, not a test session's INTERNALERROR.
        raise ToolsUnavailable(
            _unavailable_message(missing, versions, f"The cache cannot be used: {exc}. "
                                 "Point XDG_CACHE_HOME at a writable directory.")) from exc
    result: dict[str, Tool] = {}
    for t in tools:
        if found[t]:  # already checked (its --version ran) before the build
            result[t] = found[t]
            continue
        tool = _installed(t, versions)
        if tool is None:
            raise ToolsUnavailable(_unavailable_message([t], versions, "Build produced nothing."))
        result[t] = dataclasses.replace(tool, source="built")
    return result


def ensure_tools(*, build: bool = True, tools: tuple[str, ...] = ALL_TOOLS) -> dict[str, Path]:
    """Paths of the pinned ``tools`` (default ``ALL_TOOLS``), building missing ones once
    into the cache."""
    return {name: tool.path for name, tool in resolve_tools(build=build, tools=tools).items()}


@click.command("k8s-tools")
@click.option("--check", is_flag=True, help="Only verify that the pinned tools are available.")
@click.option("--tool", "names", multiple=True, type=click.Choice(KNOWN_TOOLS),
              help="Provide this tool (repeatable) instead of the Kubernetes test set.")
@click.option("--all", "all_tools", is_flag=True,
              help="The Kubernetes test set and terraform, tflint, skaffold, promtool and helm4 (Helm 4).")
def k8s_tools(check: bool, names: tuple[str, ...], all_tools: bool) -> None:
    """Provide the pinned tools and print their paths: by default the Kubernetes test set
    (etcd, kube-apiserver, kube-controller-manager, kubectl, helm, kubeconform)."""
    wanted = KNOWN_TOOLS if all_tools else (names or ALL_TOOLS)
    try:
        tools = resolve_tools(build=not check, tools=wanted)
    except ToolsUnavailable as exc:
        raise click.ClickException(str(exc)) from exc
    for tool in tools.values():
        click.echo(f"{tool.name:<24} v{tool.version:<8} {tool.source:<18} {tool.path}")
