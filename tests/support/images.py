"""The deployables' images, built and run from their own Dockerfiles without a container engine.

This machine has no Docker daemon and cannot pull ``python:3.11-slim-bookworm``. So the
base image is this machine's own system (``/usr``, ``/etc``) with the Python that runs the
tests mounted at ``/usr/local``, where the python images keep theirs. Everything else is
done as each Dockerfile says:

* **build**: the build stage's ``COPY`` lines copy from the repository as the build context
  (``.dockerignore`` applied), and its ``RUN`` lines run as root in a chroot of a scratch
  root with the stage's ``ENV`` (and this machine's pip settings), with the network;
* **image**: the final stage's ``COPY --from``, ``COPY``, ``WORKDIR``, ``ENV``, ``USER`` and
  ``ENTRYPOINT``/``CMD``. A built image is kept under ``.../images/<folder>-<hash>``, where the
  hash covers everything its build reads, and rebuilt only when that changes;
* **run**: in a mount namespace of its own (``unshare``), chrooted into a root that is
  mounted read-only, as the image's ``USER`` (or the pod's ``runAsUser``) with no new
  privileges. ``/tmp`` and ``/dev/shm`` are fresh tmpfs, as the charts' ``emptyDir`` volumes
  are, and ``/run`` holds only the files a test hands in (a service-account token).
  Handed-in files are mounted read-only at their own paths under ``/run`` or ``/tmp``
  (the test PostgreSQL's socket is in a directory under ``/tmp``, so its URLs work
  unchanged). The network is the host's, so loopback servers are reachable.

Building and running need root (mount namespaces, chroot), which CI has; elsewhere the
tests that use an image are skipped with that reason.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from fnmatch import fnmatch
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
# Bumped when what a build produces changes, so that older cached images are not reused.
FORMAT = "1"
# The python images' environment, before a Dockerfile's own ENV.
BASE_ENV = {"PATH": "/usr/local/bin:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"}
PYTHON_HOME = Path(sys.base_prefix)
KEEP_BUILDS = 3  # per image, the most recently used; older ones are deleted after a build


class DockerfileError(ValueError):
    """The Dockerfile uses an instruction or form that this builder does not handle."""


@dataclass
class Stage:
    name: str | None
    base: str
    env: dict[str, str] = field(default_factory=dict)
    steps: list[tuple[str, list[str]]] = field(default_factory=list)  # (instruction, arguments)
    workdir: str = "/"
    user: str = "0:0"
    entrypoint: list[str] = field(default_factory=list)
    cmd: list[str] = field(default_factory=list)


def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, rest) for each instruction, continuation lines joined, comments left out."""
    found, pending = [], ""
    for line in text.splitlines():
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        keyword, _, rest = (pending + line).strip().partition(" ")
        found.append((keyword.upper(), rest.strip()))
        pending = ""
    return found


def _expand(value: str, env: dict[str, str]) -> str:
    for name, current in env.items():
        value = value.replace(f"${{{name}}}", current).replace(f"${name}", current)
    return value


def parse_dockerfile(text: str) -> list[Stage]:
    stages: list[Stage] = []
    for keyword, rest in instructions(text):
        if keyword == "FROM":
            words = rest.split()
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            stages.append(Stage(name=name, base=words[0], env=dict(BASE_ENV)))
            continue
        stage = stages[-1]
        if keyword == "ENV":
            for pair in shlex.split(rest):
                key, _, value = pair.partition("=")
                stage.env[key] = _expand(value, stage.env)
        elif keyword in ("RUN", "COPY"):
            stage.steps.append((keyword, [rest] if keyword == "RUN" else rest.split()))
        elif keyword == "WORKDIR":
            stage.workdir = rest
            stage.steps.append(("WORKDIR", [rest]))
        elif keyword == "USER":
            stage.user = rest
        elif keyword in ("CMD", "ENTRYPOINT"):
            if not rest.startswith("["):
                raise DockerfileError(f"{keyword} in shell form: {rest}")
            setattr(stage, keyword.lower(), json.loads(rest))
        elif keyword != "EXPOSE":
            raise DockerfileError(f"unsupported instruction {keyword} {rest}")
    return stages


def ignored(relative: str, patterns: list[str]) -> bool:
    """Whether .dockerignore leaves ``relative`` (a path in the context) out."""
    parts = relative.split("/")
    for pattern in patterns:
        if pattern.startswith("**/") and any(fnmatch(part, pattern[3:]) for part in parts):
            return True
        if fnmatch(relative, pattern) or relative.startswith(pattern.rstrip("/") + "/"):
            return True
    return False


def context_files(source: str, patterns: list[str]) -> list[Path]:
    """The context's files under ``source``, as a build would see them, sorted."""
    top = REPO_ROOT / source
    if top.is_file():
        return [top]
    return sorted(p for p in top.rglob("*")
                  if p.is_file() and not ignored(p.relative_to(REPO_ROOT).as_posix(), patterns))


def _copy_in(root: Path, sources: list[str], destination: str, patterns: list[str]) -> None:
    target = root / destination.lstrip("/")
    for source in sources:
        files = context_files(source, patterns)
        if not files:
            raise DockerfileError(f"COPY {source}: nothing in the context")
        for path in files:
            if (REPO_ROOT / source).is_file():
                out = target / path.name if destination.endswith("/") else target
            else:
                out = target / path.relative_to(REPO_ROOT / source)
            out.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, out)


def _dockerignore() -> list[str]:
    lines = (REPO_ROOT / ".dockerignore").read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def _build_key(folder: str, stages: list[Stage], patterns: list[str]) -> str:
    digest = hashlib.sha256(f"{FORMAT} {PYTHON_HOME} {sys.version}".encode())
    dockerfile = REPO_ROOT / folder / "Dockerfile"
    for path in [dockerfile, REPO_ROOT / ".dockerignore"] + [
            p for stage in stages for kind, args in stage.steps if kind == "COPY"
            for source in args[:-1] if not source.startswith("--") for p in context_files(source, patterns)]:
        digest.update(path.relative_to(REPO_ROOT).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "rates-platform" / "images"


# --- the sandbox --------------------------------------------------------------------------

def _mount_point_tree(root: Path) -> None:
    """The directories a root needs for the base system's mounts, made once in the image."""
    for name in ("bin", "sbin", "lib", "lib64"):
        host = Path("/") / name
        if host.is_symlink():
            (root / name).symlink_to(os.readlink(host))
        elif host.is_dir():
            (root / name).mkdir(exist_ok=True)
    for name in ("usr", "etc", "dev", "proc", "tmp", "run", "var", "opt", str(PYTHON_HOME).lstrip("/")):
        (root / name).mkdir(mode=0o755, parents=True, exist_ok=True)
    # Walkable to the Python below, as /usr/local is in the python images.
    for parent in (root / str(PYTHON_HOME).lstrip("/")).relative_to(root).parents:
        (root / parent).chmod(0o755)
    (root / "tmp").chmod(0o1777)
    if not (root / "var" / "run").exists():
        (root / "var" / "run").symlink_to("/run")


READ_ONLY, WRITABLE, BUILD = "read-only", "writable", "build"


def _sandbox_script(root: Path, *, mode: str, files: dict[str, Path], argv: list[str]) -> str:
    """Shell that mounts the container's root in a private mount namespace, then execs ``argv``
    chrooted into it. ``mode``: READ_ONLY; WRITABLE, whose writes go to memory (an overlay;
    the image stays as built); or BUILD, whose writes are the build's own."""
    q = shlex.quote
    r = str(root)
    lines = ["set -eu", f"mount --bind {q(r)} {q(r)}"]
    if mode == WRITABLE:
        scratch = q(str(root.parent / "scratch"))
        lines = ["set -eu", f"mount -t tmpfs -o mode=700 scratch {scratch}",
                 f"mkdir {scratch}/upper {scratch}/work",
                 f"mount -t overlay overlay -o lowerdir={q(r)},upperdir={scratch}/upper,workdir={scratch}/work {q(r)}"]

    def bind_ro(host: str, inside: str) -> None:
        lines.append(f"mount --bind {q(host)} {q(r + inside)}")
        lines.append(f"mount -o remount,bind,ro {q(r + inside)}")

    for name in ("bin", "sbin", "lib", "lib64"):
        if (Path("/") / name).is_dir() and not (Path("/") / name).is_symlink():
            bind_ro("/" + name, "/" + name)
    bind_ro("/usr", "/usr")
    bind_ro("/etc", "/etc")
    bind_ro(str(PYTHON_HOME), str(PYTHON_HOME))  # its libpython's RUNPATH names this path
    if PYTHON_HOME != Path("/usr/local"):
        bind_ro(str(PYTHON_HOME), "/usr/local")
    lines += [f"mount --rbind /dev {q(r + '/dev')}",
              f"mount -t tmpfs -o mode=1777,nosuid,nodev shm {q(r + '/dev/shm')}",
              f"mount -t proc proc {q(r + '/proc')}",
              f"mount -t tmpfs -o mode=1777,nosuid,nodev tmp {q(r + '/tmp')}",
              f"mount -t tmpfs -o mode=755,nosuid,nodev run {q(r + '/run')}"]
    for inside, host in files.items():
        inside = inside.removeprefix("/var") if inside.startswith("/var/run/") else inside
        if not inside.startswith(("/run/", "/tmp/")):
            raise ValueError(f"{inside}: files are handed in under /run or /tmp only")
        target = r + inside
        lines += [f"mkdir -p {q(os.path.dirname(target))}", f"touch {q(target)}",
                  f"mount --bind {q(str(host))} {q(target)}", f"mount -o remount,bind,ro {q(target)}"]
    lines.append(f"mount -o remount,ro {q(r + '/run')}")
    if mode == READ_ONLY:
        lines.append(f"mount -o remount,bind,ro {q(r)}")
    lines.append("cd /")
    lines.append("exec chroot " + q(r) + " " + " ".join(q(a) for a in argv))
    return "\n".join(lines)


def _unshared(script: str) -> list[str]:
    return ["unshare", "--mount", "--propagation", "private", "sh", "-c", script]


def run_in_root(root: Path, argv: list[str], *, read_only: bool = True, files: dict[str, Path] | None = None,
                **popen) -> subprocess.Popen:
    """Start ``argv`` (paths inside the root) chrooted into ``root``; the process is ``argv``
    itself once the mounts are made, so signals reach it."""
    script = _sandbox_script(root, mode=READ_ONLY if read_only else WRITABLE, files=files or {}, argv=argv)
    return subprocess.Popen(_unshared(script), **popen)


def _as_user(user: str, env: dict[str, str], workdir: str, command: list[str]) -> list[str]:
    uid, _, gid = user.partition(":")
    if not uid.isdigit() or not (gid or uid).isdigit():
        raise DockerfileError(f"USER {user}: only numeric users can run here (and in a restricted pod)")
    switch = ["/usr/bin/setpriv", f"--reuid={uid}", f"--regid={gid or uid}", "--clear-groups",
              "--no-new-privs"] if user not in ("0", "0:0") else []
    return [*switch, "/usr/bin/env", "-i", "-C", workdir, *(f"{k}={v}" for k, v in env.items()), *command]


# --- build -------------------------------------------------------------------------------

def _run_build_step(root: Path, stage: Stage, command: str) -> None:
    env = dict(stage.env, HOME="/root")
    # pip's own settings on this machine (certificates, index), as a build host would have them
    env.update({k: v for k, v in os.environ.items()
                if k in ("PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL", "PIP_CERT", "PIP_TRUSTED_HOST",
                         "PIP_DEFAULT_TIMEOUT", "SSL_CERT_FILE", "SSL_CERT_DIR", "REQUESTS_CA_BUNDLE")})
    argv = _as_user("0:0", env, stage.workdir, ["/bin/sh", "-c", command])
    script = _sandbox_script(root, mode=BUILD, files={}, argv=argv)
    done = subprocess.run(_unshared(script), capture_output=True, text=True, timeout=900)
    if done.returncode != 0:
        raise RuntimeError(f"RUN {command} failed ({done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")


def _apply(stage: Stage, root: Path, built: dict[str, Path], patterns: list[str]) -> None:
    for kind, args in stage.steps:
        if kind == "WORKDIR":
            (root / args[0].lstrip("/")).mkdir(parents=True, exist_ok=True)
        elif kind == "RUN":
            _run_build_step(root, stage, args[0])
        elif args[0].startswith("--from="):
            source, destination = args[1:]
            origin = built[args[0].removeprefix("--from=")] / source.lstrip("/")
            target = root / destination.lstrip("/")
            target.parent.mkdir(parents=True, exist_ok=True)
            # Same path inside both roots, so the virtualenv's absolute paths still hold.
            shutil.copytree(origin, target, symlinks=True) if origin.is_dir() else shutil.copy2(origin, target)
        else:
            _copy_in(root, args[:-1], args[-1], patterns)


@dataclass
class Image:
    """A built image: its root filesystem and what its final stage says to run."""

    folder: str
    rootfs: Path
    env: dict[str, str]
    workdir: str
    user: str
    entrypoint: list[str]
    cmd: list[str]

    def start(self, args: list[str] | None = None, *, command: list[str] | None = None,
              env: dict[str, str] | None = None, user: str | None = None, read_only: bool = True,
              files: dict[str, Path] | None = None, **popen) -> subprocess.Popen:
        """Start a container as Kubernetes would: ``command`` replaces the ENTRYPOINT,
        ``args`` the CMD; ``env`` adds to the image's; ``user`` ("uid:gid") overrides USER;
        ``files`` (container path -> host file) are mounted read-only, under /run or /tmp."""
        argv = (command if command is not None else self.entrypoint) + (
            args if args is not None else (self.cmd if command is None else []))
        full_env = {**self.env, "HOME": "/", "HOSTNAME": "container", **(env or {})}
        inner = _as_user(user or self.user, full_env, self.workdir, argv)
        return run_in_root(self.rootfs, inner, read_only=read_only, files=files, **popen)

    def run(self, args: list[str] | None = None, *, timeout: float = 120, **options) -> subprocess.CompletedProcess:
        proc = self.start(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **options)
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
        return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def _load(folder: str, path: Path) -> Image:
    config = json.loads((path / "config.json").read_text())
    os.utime(path)  # most recently used, for pruning
    (path / "scratch").mkdir(exist_ok=True)  # a writable container's overlay goes here
    return Image(folder=folder, rootfs=path / "rootfs", **config)


def build(folder: str) -> Image:
    """The image of ``folder``'s Dockerfile: from the cache, or built now (15-30 s each)."""
    stages = parse_dockerfile((REPO_ROOT / folder / "Dockerfile").read_text())
    patterns = _dockerignore()
    cache = cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    path = cache / f"{folder}-{_build_key(folder, stages, patterns)}"
    with (cache / f".{folder}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (path / "config.json").exists():
            _build_into(path, stages, patterns)
            _prune(cache, folder, keep=path)
        return _load(folder, path)


def _build_into(path: Path, stages: list[Stage], patterns: list[str]) -> None:
    work = Path(tempfile.mkdtemp(prefix=".building-", dir=path.parent))
    try:
        built: dict[str, Path] = {}
        for index, stage in enumerate(stages):
            if stage.base != stages[0].base and stage.base not in built:
                raise DockerfileError(f"FROM {stage.base}: only the python base image is provided here")
            root = work / f"stage-{index}"
            root.mkdir(mode=0o755)
            _mount_point_tree(root)
            _apply(stage, root, built, patterns)
            built[stage.name or str(index)] = root
        final = stages[-1]
        (work / "config.json").write_text(json.dumps({
            "env": final.env, "workdir": final.workdir, "user": final.user,
            "entrypoint": final.entrypoint, "cmd": final.cmd}))
        result = work / "image"
        result.mkdir()
        (work / f"stage-{len(stages) - 1}").rename(result / "rootfs")
        (work / "config.json").rename(result / "config.json")
        result.rename(path)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _prune(cache: Path, folder: str, keep: Path) -> None:
    others = sorted((p for p in cache.glob(f"{folder}-*") if p != keep and p.is_dir()),
                    key=lambda p: p.stat().st_mtime, reverse=True)
    for old in others[KEEP_BUILDS - 1:]:
        shutil.rmtree(old, ignore_errors=True)


# --- what a container needs from the tests' servers -------------------------------------------

# The charts' image repositories (without registry or tag), and the folder each is built from.
IMAGE_FOLDERS = {"rates-api": "api", "rates-ingest": "ingest-job", "rates-controller": "controller"}


def folder_of(reference: str) -> str | None:
    """The folder whose image ``reference`` (registry/name:tag@digest) names, or None."""
    name = reference.split("@")[0].rsplit("/", 1)[-1].split(":")[0]
    return IMAGE_FOLDERS.get(name)


def postgres_socket(dsn: str) -> dict[str, Path]:
    """The files to hand a container so that it reaches the test server of ``dsn`` with the
    same URL: its Unix socket, at its own path."""
    parts = urlsplit(dsn)
    socket = Path(dict(parse_qsl(parts.query))["host"]) / f".s.PGSQL.{parts.port or 5432}"
    return {str(socket): socket}


SERVICE_ACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"


def service_account_for_container(directory: Path, server: str, ca_file: Path, token: str,
                                  namespace: str) -> tuple[dict[str, str], dict[str, Path]]:
    """(env, files) that a kubelet gives a pod with a service-account token: the API
    server's address and the token, CA and namespace where in-cluster clients read them."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "token").write_text(token)
    (directory / "namespace").write_text(namespace)
    shutil.copyfile(ca_file, directory / "ca.crt")
    address = urlsplit(server)
    env = {"KUBERNETES_SERVICE_HOST": address.hostname, "KUBERNETES_SERVICE_PORT": str(address.port or 443)}
    return env, {f"{SERVICE_ACCOUNT_DIR}/{name}": directory / name for name in ("token", "ca.crt", "namespace")}


def pod_user(pod_spec: dict, container: dict) -> str | None:
    """``uid:gid`` that the pod's and container's securityContext ask for (the container's
    wins), or None for the image's USER."""
    merged = {**(pod_spec.get("securityContext") or {}), **(container.get("securityContext") or {})}
    if "runAsUser" not in merged:
        return None
    return f"{merged['runAsUser']}:{merged.get('runAsGroup', merged['runAsUser'])}"


def can_run_images() -> str | None:
    """Why images cannot be built or run here, or None."""
    if os.geteuid() != 0:
        return "building and running images needs root (mount namespaces and chroot)"
    if PYTHON_HOME == Path("/usr"):
        return "the tests' Python must be installed under a prefix of its own (it becomes /usr/local)"
    if not shutil.which("unshare") or not Path("/usr/bin/setpriv").exists():
        return "needs util-linux's unshare and setpriv"
    return None


@pytest.fixture(scope="session")
def images():
    """images(folder) -> Image: ``folder``'s image, built once (and cached between sessions)."""
    reason = can_run_images()
    built: dict[str, Image] = {}

    def get(folder: str) -> Image:
        if reason:
            pytest.skip(reason)
        if folder not in built:
            built[folder] = build(folder)
        return built[folder]

    return get
