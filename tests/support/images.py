"""The deployables' images, built and run from their own Dockerfiles without a container engine.

This machine has no Docker daemon and cannot pull ``python:3.11-slim-bookworm``. So the
base image is this machine's own system (``/usr``, ``/etc``), with the Python that runs
the tests mounted at ``/usr/local``, where the python images keep theirs. Everything else
is done as each Dockerfile says (read by tests/support/dockerfile.py):

* **build**: the build stage's ``COPY`` lines copy from the repository as the build context
  (``.dockerignore`` applied), and its ``RUN`` lines run as root in a chroot of a scratch
  root with the step's ``ENV`` and WORKDIR, Docker's default capabilities and the
  network. pip takes wheels only (``PIP_ONLY_BINARY``; the project's own packages are still
  built): the slim base has no compilers, this machine does;
* **image**: the final stage's ``COPY --from``, ``COPY``, ``WORKDIR``, ``ENV``, ``USER`` and
  ``ENTRYPOINT``/``CMD``. A built image is kept under ``.../images/<folder>-<hash>``, where the
  hash covers the Dockerfile, the context it copies, this code and the Python, and is
  rebuilt only when those change;
* **run**: as PID 1 of new mount and PID namespaces (tests/support/sandbox.py, which passes
  signals on and takes the container down if it dies), in a root made the root with
  ``pivot_root``: read-only, or writable into memory (an overlay) when a pod asks. The
  process is the image's ``USER`` or the pod's ``runAsUser``, with no new privileges and
  the pod's capabilities (Docker's default set unless a securityContext drops them, as the
  charts drop all). ``/dev`` holds only null, zero, full, random, urandom and tty;
  ``/proc`` is the namespace's own, with ``/proc/sys`` and the like read-only as runc makes
  them; ``/dev/shm`` is a fresh tmpfs, and so is ``/tmp``, but read-only unless the pod
  mounts a writable volume there (the API's chart does; the controller, the ingest Jobs and
  the migration hook do not, so their ``/tmp`` is the read-only root's); handed-in files (a service-account token, the test PostgreSQL's socket) are mounted
  read-only at their paths under ``/run`` or ``/tmp``. The base system (``/usr``,
  ``/etc``, ``/usr/local``) stays read-only even in a writable root.

Not emulated: the network and the hostname are the host's (loopback servers are
reachable).

Building and running need root with mount and PID namespaces, which CI has; elsewhere the
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
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

import pytest

from tests.support import dockerfile
from tests.support.dockerfile import Context, DockerfileError, Stage

REPO_ROOT = Path(__file__).resolve().parents[2]
PYTHON_HOME = Path(sys.base_prefix)
KEEP_BUILDS = 3  # per image, the most recently used that no session holds; older ones go
# Docker's default capabilities: what a build's RUN has, and a root container unless its
# securityContext drops them.
DOCKER_CAPABILITIES = frozenset({
    "chown", "dac_override", "fowner", "fsetid", "kill", "setgid", "setuid", "setpcap", "net_bind_service",
    "net_raw", "sys_chroot", "mknod", "audit_write", "setfcap"})
DEVICES = ("null", "zero", "full", "random", "urandom", "tty")
READ_ONLY, WRITABLE, BUILD = "read-only", "writable", "build"
_held: list = []  # lock files of the images this process uses, held until it exits


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


def _root_lines(root: Path, mode: str) -> list[str]:
    """Mount the root itself: a bind of the image (made read-only at the end), an overlay
    whose writes go to memory, or, for a build, the build's own directory."""
    q, r = shlex.quote, shlex.quote(str(root))
    if mode != WRITABLE:
        return [f"mount --bind {r} {r}"]
    scratch = q(str(root.parent / "scratch"))
    return [f"mount -t tmpfs -o mode=700 scratch {scratch}", f"mkdir {scratch}/upper {scratch}/work",
            f"mount -t overlay overlay -o lowerdir={r},upperdir={scratch}/upper,workdir={scratch}/work {r}"]


def _system_lines(root: Path) -> list[str]:
    """The base image: this machine's system and Python, read-only; a minimal /dev; /proc."""
    q, r = shlex.quote, str(root)
    lines = []
    binds = [("/" + name, "/" + name) for name in ("bin", "sbin", "lib", "lib64")
             if (Path("/") / name).is_dir() and not (Path("/") / name).is_symlink()]
    binds += [("/usr", "/usr"), ("/etc", "/etc"), (str(PYTHON_HOME), str(PYTHON_HOME))]  # libpython's RUNPATH
    if PYTHON_HOME != Path("/usr/local"):
        binds.append((str(PYTHON_HOME), "/usr/local"))
    for host, inside in binds:
        lines += [f"mount --bind {q(host)} {q(r + inside)}", f"mount -o remount,bind,ro {q(r + inside)}"]
    dev = r + "/dev"
    lines.append(f"mount -t tmpfs -o mode=755,nosuid dev {q(dev)}")
    for name in DEVICES:
        lines += [f"touch {q(dev + '/' + name)}", f"mount --bind /dev/{name} {q(dev + '/' + name)}"]
    lines += [f"ln -s /proc/self/fd {q(dev + '/fd')}",
              *(f"ln -s /proc/self/fd/{n} {q(dev + '/' + s)}" for n, s in enumerate(("stdin", "stdout", "stderr"))),
              f"mkdir {q(dev + '/shm')}", f"mount -t tmpfs -o mode=1777,nosuid,nodev shm {q(dev + '/shm')}",
              f"mount -o remount,ro {q(dev)}",
              # The new PID namespace's own /proc, with what runc keeps from containers made
              # read-only or empty.
              f"mount -t proc -o nosuid,nodev,noexec proc {q(r + '/proc')}"]
    for name in ("sys", "sysrq-trigger", "irq", "bus"):
        path = q(f"{r}/proc/{name}")
        lines.append(f"if [ -e {path} ]; then mount --bind {path} {path}; mount -o remount,bind,ro {path}; fi")
    for name in ("kcore", "keys", "timer_list"):
        path = q(f"{r}/proc/{name}")
        lines.append(f"if [ -e {path} ]; then mount --bind /dev/null {path}; fi")
    return lines + [f"mount -t tmpfs -o mode=1777,nosuid,nodev tmp {q(r + '/tmp')}",
                    f"mount -t tmpfs -o mode=755,nosuid,nodev run {q(r + '/run')}"]


def _file_lines(root: Path, files: dict[str, Path]) -> list[str]:
    q, lines = shlex.quote, []
    for inside, host in files.items():
        inside = inside.removeprefix("/var") if inside.startswith("/var/run/") else inside
        if not inside.startswith(("/run/", "/tmp/")):
            raise ValueError(f"{inside}: files are handed in under /run or /tmp only")
        target = str(root) + inside
        lines += [f"mkdir -p {q(os.path.dirname(target))}", f"touch {q(target)}",
                  f"mount --bind {q(str(host))} {q(target)}", f"mount -o remount,bind,ro {q(target)}"]
    return lines + [f"mount -o remount,ro {q(str(root) + '/run')}"]


def _sandbox_script(root: Path, *, mode: str, files: dict[str, Path], argv: list[str],
                    writable_tmp: bool = True) -> str:
    """Shell that mounts the container's root, makes it the root (``pivot_root``, so that
    the host's is not just hidden but gone from the namespace), then execs ``argv`` there
    (``mode``: READ_ONLY, WRITABLE or BUILD)."""
    q = shlex.quote
    lines = ["set -eu", *_root_lines(root, mode), *_system_lines(root), *_file_lines(root, files)]
    if mode == READ_ONLY:
        if not writable_tmp:  # after the files handed in under it are in place
            lines.append(f"mount -o remount,ro {q(str(root) + '/tmp')}")
        lines.append(f"mount -o remount,bind,ro {q(str(root))}")
    lines += [f"cd {q(str(root))}", "pivot_root . .", "umount -l .", "cd /",
              "exec " + " ".join(q(a) for a in argv)]
    return "\n".join(lines)


SANDBOX = Path(__file__).with_name("sandbox.py")


def _unshared(script: str) -> list[str]:
    """The command that runs ``script`` as PID 1 of new mount and PID namespaces."""
    return [sys.executable, str(SANDBOX), script]


def _identity(user: str, groups: list[int], capabilities: frozenset[str]) -> list[str]:
    """setpriv arguments: the user, ``uid[:gid]`` (gid 0 when none is given, as Docker and
    the kubelet do), supplementary ``groups``, ``capabilities`` as the bounding set, no new
    privileges, and the parent-death signal kept across the change of user."""
    uid, _, gid = user.partition(":")
    if not uid.isdigit() or not (gid or "0").isdigit():
        raise DockerfileError(f"USER {user}: only numeric users run here (and in a restricted pod)")
    caps = ",".join(["-all", *(f"+{c}" for c in sorted(capabilities))])
    group_args = [f"--groups={','.join(map(str, groups))}"] if groups else ["--clear-groups"]
    return ["/usr/bin/setpriv", f"--reuid={uid}", f"--regid={gid or 0}", *group_args, f"--bounding-set={caps}",
            f"--inh-caps={caps}", "--no-new-privs", "--pdeathsig=keep"]


def _env_argv(env: dict[str, str], workdir: str, command: list[str]) -> list[str]:
    return ["/usr/bin/env", "-i", "-C", workdir, *(f"{k}={v}" for k, v in env.items()), *command]


# --- images --------------------------------------------------------------------------------

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
              env: dict[str, str] | None = None, user: str | None = None, groups: list[int] | None = None,
              capabilities: frozenset[str] | None = None, read_only: bool = True, writable_tmp: bool = False,
              files: dict[str, Path] | None = None, **popen) -> subprocess.Popen:
        """Start a container as Kubernetes would: ``command`` replaces the ENTRYPOINT and
        ``args`` the CMD; ``env`` adds to the image's; ``user`` ("uid:gid") replaces USER;
        ``capabilities`` (default: Docker's) bound what root may do; ``writable_tmp``: the
        pod mounts an emptyDir at /tmp; ``files`` (container path -> host file) are mounted
        read-only, under /run or /tmp. The process started runs the container and exits with
        its status, as ``docker run`` does."""
        argv = (command if command is not None else self.entrypoint) + (
            args if args is not None else (self.cmd if command is None else []))
        if not argv:
            raise DockerfileError(f"{self.folder}: no command (no ENTRYPOINT or CMD, and none given)")
        full_env = {**self.env, "HOME": "/", "HOSTNAME": "container", **(env or {})}
        inner = [*_identity(user or self.user, groups or [], DOCKER_CAPABILITIES if capabilities is None
                            else capabilities), *_env_argv(full_env, self.workdir, argv)]
        script = _sandbox_script(self.rootfs, mode=READ_ONLY if read_only else WRITABLE, files=files or {},
                                 argv=inner, writable_tmp=writable_tmp)
        return subprocess.Popen(_unshared(script), **popen)

    def run(self, args: list[str] | None = None, *, timeout: float = 120, **options) -> subprocess.CompletedProcess:
        proc = self.start(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **options)
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
        return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def container_pid(process: subprocess.Popen) -> int:
    """The host's pid of the container's first process, which ``Image.start`` runs under
    ``process`` (its runtime)."""
    with open(f"/proc/{process.pid}/task/{process.pid}/children") as children:
        [pid] = children.read().split()
    return int(pid)


def _run_build_step(root: Path, step: dockerfile.Step) -> None:
    env = dict(step.env, HOME="/root", PIP_ONLY_BINARY=":all:")
    # pip's own settings on this machine (certificates, index), as a build host would have them
    env.update({k: v for k, v in os.environ.items()
                if k in ("PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL", "PIP_CERT", "PIP_TRUSTED_HOST",
                         "PIP_DEFAULT_TIMEOUT", "SSL_CERT_FILE", "SSL_CERT_DIR", "REQUESTS_CA_BUNDLE")})
    argv = [*_identity("0", [], DOCKER_CAPABILITIES), *_env_argv(env, step.workdir, ["/bin/sh", "-c", step.args[0]])]
    done = subprocess.run(_unshared(_sandbox_script(root, mode=BUILD, files={}, argv=argv)),
                          capture_output=True, text=True, timeout=900)
    if done.returncode != 0:
        raise RuntimeError(f"RUN {step.args[0]} failed ({done.returncode}):\n{done.stdout[-3000:]}\n"
                           f"{done.stderr[-3000:]}")


def _apply(stage: Stage, root: Path, built: dict[str, Path], context: Context) -> None:
    for step in stage.steps:
        if step.kind == "WORKDIR":
            (root / step.args[0].lstrip("/")).mkdir(parents=True, exist_ok=True)
        elif step.kind == "RUN":
            _run_build_step(root, step)
        elif step.args[0].startswith("--from="):
            source, destination = step.args[1:]
            origin = built[step.args[0].removeprefix("--from=")] / source.lstrip("/")
            target = root / destination.lstrip("/")
            target.parent.mkdir(parents=True, exist_ok=True)
            # Same path inside both roots, so the virtualenv's absolute paths still hold.
            if origin.is_dir():
                shutil.copytree(origin, target, symlinks=True, dirs_exist_ok=True)
            else:
                shutil.copy2(origin, target)
        else:
            destination = step.args[-1]
            for source in step.args[:-1]:
                context.copy(source, root / destination.lstrip("/"), into_directory=destination.endswith("/"))


def _build_key(folder: str, stages: list[Stage], context: Context) -> str:
    digest = hashlib.sha256(f"{PYTHON_HOME}\0{sys.version}\0".encode())
    for code in (Path(__file__), Path(dockerfile.__file__), REPO_ROOT / folder / "Dockerfile",
                 REPO_ROOT / ".dockerignore"):
        digest.update(code.read_bytes() + b"\0")
    context.digest([source for stage in stages for source in stage.context_sources()], digest)
    return digest.hexdigest()[:16]


def _build_into(path: Path, stages: list[Stage], context: Context, folder: str) -> None:
    work = Path(tempfile.mkdtemp(prefix=f".building-{folder}-", dir=path.parent))
    # Docker builds under umask 022 whatever the caller's: under a shell's 077 the image's
    # directories would shut its own user out, and that image would then be cached.
    umask = os.umask(0o022)
    try:
        built: dict[str, Path] = {}
        for index, stage in enumerate(stages):
            if stage.base != stages[0].base and stage.base not in built:
                raise DockerfileError(f"FROM {stage.base}: only the python base image is provided here")
            root = work / f"stage-{index}"
            root.mkdir(mode=0o755)
            _mount_point_tree(root)
            _apply(stage, root, built, context)
            built[stage.name or str(index)] = root
        final = stages[-1]
        result = work / "image"
        result.mkdir()
        (work / f"stage-{len(stages) - 1}").rename(result / "rootfs")
        (result / "config.json").write_text(json.dumps({
            "env": final.env, "workdir": final.workdir, "user": final.user,
            "entrypoint": final.entrypoint, "cmd": final.cmd}))
        (result / "scratch").mkdir()  # a writable container's overlay is mounted here
        result.rename(path)
    finally:
        os.umask(umask)
        shutil.rmtree(work, ignore_errors=True)


def _hold(path: Path) -> None:
    """Mark ``path`` in use by this process, so that no other session prunes it meanwhile."""
    lock = (path / "in-use").open("a")
    fcntl.flock(lock, fcntl.LOCK_SH)
    _held.append(lock)


def _prune(cache: Path, folder: str) -> None:
    """Past the KEEP_BUILDS most recently used images of ``folder``, delete those that no
    process holds; and what interrupted builds or deletions left (under the folder's lock).
    An image is renamed out of the way first, so that half of one is never taken for one."""
    older = sorted((p for p in cache.glob(f"{folder}-*") if p.is_dir()),
                   key=lambda p: p.stat().st_mtime, reverse=True)[KEEP_BUILDS:]
    for old in older:
        with (old / "in-use").open("a") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue  # a session runs it
            old.rename(cache / f".building-{folder}-pruned-{old.name}")
    for leftover in cache.glob(f".building-{folder}-*"):
        shutil.rmtree(leftover, ignore_errors=True)


def build(folder: str) -> Image:
    """The image of ``folder``'s Dockerfile: from the cache, or built now (15-30 s each)."""
    stages = dockerfile.parse((REPO_ROOT / folder / "Dockerfile").read_text())
    context = Context.of(REPO_ROOT)
    cache = cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    path = cache / f"{folder}-{_build_key(folder, stages, context)}"
    with (cache / f".{folder}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (path / "config.json").exists():
            if path.exists():  # not made by _build_into, which renames a finished image in place
                path.rename(cache / f".building-{folder}-broken-{path.name}")
            _prune(cache, folder)
            _build_into(path, stages, context, folder)
        os.utime(path)  # most recently used
        _hold(path)
    config = json.loads((path / "config.json").read_text())
    return Image(folder=folder, rootfs=path / "rootfs", **config)


# --- what a container needs from the tests' servers -------------------------------------------

# The charts' image repositories (without registry or tag), and the folder each is built from.
IMAGE_FOLDERS = {"rates-api": "api", "rates-ingest": "ingest-job", "rates-controller": "controller"}
SERVICE_ACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"


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


@dataclass
class PodIdentity:
    """Who a container runs as, from its pod's and its own securityContext."""

    user: str | None  # uid:gid, or None for the image's USER
    groups: list[int]
    capabilities: frozenset[str]
    read_only: bool
    run_as_non_root: bool
    writable_tmp: bool  # a writable volume (an emptyDir) is mounted at /tmp

    @classmethod
    def of(cls, pod_spec: dict, container: dict) -> "PodIdentity":
        pod = pod_spec.get("securityContext") or {}
        own = container.get("securityContext") or {}
        merged = {**pod, **own}  # the container's settings win
        user = None
        if "runAsUser" in merged:  # without runAsGroup, the primary group is root's (0)
            user = f"{merged['runAsUser']}:{merged.get('runAsGroup', 0)}"
        groups = [*([pod["fsGroup"]] if "fsGroup" in pod else []), *pod.get("supplementalGroups", [])]
        wanted = own.get("capabilities") or {}
        dropped = {c.lower().removeprefix("cap_") for c in wanted.get("drop") or []}
        added = frozenset(c.lower().removeprefix("cap_") for c in wanted.get("add") or [])
        capabilities = added if "all" in dropped else (DOCKER_CAPABILITIES - dropped) | added
        volumes = {v["name"]: v for v in pod_spec.get("volumes") or []}
        writable_tmp = any(m["mountPath"].rstrip("/") == "/tmp" and not m.get("readOnly")
                           and "emptyDir" in volumes.get(m["name"], {}) for m in container.get("volumeMounts") or [])
        return cls(user, groups, capabilities, bool(own.get("readOnlyRootFilesystem")),
                   bool(merged.get("runAsNonRoot")), writable_tmp)

    def refusal(self, image: Image) -> str | None:
        """The kubelet's reason not to start the container, or None."""
        uid = (self.user or image.user).partition(":")[0]
        if self.run_as_non_root and uid == "0":
            return "container has runAsNonRoot and image will run as root"
        return None


def can_run_images() -> str | None:
    """Why images cannot be built or run here, or None."""
    if PYTHON_HOME == Path("/usr"):
        return "the tests' Python must be installed under a prefix of its own (it becomes /usr/local)"
    if not all(Path(tool).exists() for tool in ("/usr/bin/setpriv", "/usr/sbin/pivot_root", "/usr/bin/mount")):
        return "needs util-linux's setpriv, pivot_root and mount"
    probe = subprocess.run(_unshared("mount -t tmpfs probe /mnt"), capture_output=True, text=True)
    if probe.returncode != 0:
        return f"building and running images needs root with mount and PID namespaces: {probe.stderr.strip()}"
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
