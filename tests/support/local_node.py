"""A minimal stand-in for scheduler + kubelet, so Pods of the test control plane run.

:class:`LocalNode` registers a Ready Node, binds pending Pods to it (optionally only in
given namespaces) and runs each Pod **locally as a subprocess**:

* only the first container is run;
* **one of this project's images** (``rates-api``, ``rates-ingest``, ``rates-controller``
  under any registry and tag, as the node's ``images`` says for the pod) runs as that image,
  built from its Dockerfile (tests/support/images.py): ``command`` replaces its
  ENTRYPOINT and ``args`` its CMD, the user is the securityContext's ``runAsUser`` (else
  the image's USER; ``runAsGroup`` else 0, ``fsGroup`` and ``supplementalGroups`` as
  supplementary groups), a root user under ``runAsNonRoot`` leaves the container waiting
  (``CreateContainerConfigError``) and the pod Pending, the capabilities
  are Docker's less ``drop`` plus ``add``, the root filesystem is read-only when
  ``readOnlyRootFilesystem`` says so, and ``/tmp`` and ``/dev/shm`` are empty; the node's
  ``files`` (the test PostgreSQL's socket) are handed in. The environment is the
  image's ``ENV`` plus ``HOSTNAME`` and the container's ``env``;
* **any other image is ignored**: ``command + args`` (``command`` is required; a Pod
  without one fails with exit code 127) runs from this project's virtualenv, whose
  ``<sys.prefix>/bin`` comes first on ``PATH``, so ``python`` and the project's console
  scripts are the ones installed here. The environment is ``PATH``, ``HOME``, ``LANG``,
  ``TMPDIR``, ``HOSTNAME`` (the Pod name) plus the container's ``env``;
* in both, ``env`` takes ``$(VAR)`` expansion in values and args, and:
  plain ``value`` entries and ``valueFrom`` with ``secretKeyRef``, ``configMapKeyRef`` and
  ``fieldRef`` to ``metadata.name``/``metadata.namespace``. ``envFrom``, volumes, probes,
  resources, init/sidecar containers and service-account tokens are not supported, nor
  ``securityContext`` for a pod run from the virtualenv;
* the working directory is ``workingDir`` if it exists, else the node's ``workdir`` (the
  current directory by default); stdout+stderr go to a file in ``logdir``, see
  :meth:`LocalNode.logs` (the pytest fixture keeps them under the test's ``tmp_path``).

Pod status is written like a kubelet would: ``Running`` while the process runs, then
``Succeeded``/``Failed`` with ``containerStatuses[0].state.terminated.exitCode`` (and, for
``terminationMessagePolicy: FallbackToLogsOnError``, the log's tail as its ``message``) and the
Ready/ContainersReady conditions, which is what the Job controller (including
``podFailurePolicy`` rules on exit codes) reads. Deleting a Pod kills its process. Pods are
never restarted (use ``restartPolicy: Never``; ``OnFailure`` is treated the same).
"""

from __future__ import annotations

import base64
import contextlib
import datetime
import os
import shutil
import subprocess
import sys
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from kubernetes import client
from kubernetes.client.rest import ApiException

from tests.support.images import Image, PodIdentity
from tests.support.proc import die_with_parent, stop_process

POLL_INTERVAL = 0.2
# the generated client would pick JSON-patch for a dict body
SMP = "application/strategic-merge-patch+json"


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


class _Refused(Exception):
    """The kubelet would not create this container (its reason)."""


@dataclass
class _Running:
    proc: subprocess.Popen
    namespace: str
    name: str
    container: str
    started_at: str
    log: Path
    fallback_to_logs: bool = False  # terminationMessagePolicy: FallbackToLogsOnError
    reported: bool = field(default=False)


class LocalNode:
    """Run Pods as local processes. Use as a context manager or call start()/stop()."""

    def __init__(
        self,
        api_client: client.ApiClient,
        name: str = "local-node",
        namespaces: list[str] | tuple[str, ...] | None = None,
        workdir: Path | str | None = None,
        logdir: Path | str | None = None,
        images: Callable[[client.V1Pod], Image | None] | None = None,
        files: dict[str, Path] | None = None,
    ) -> None:
        """``images(pod)`` -> the Image to run its container as, or None to run its command
        from the virtualenv; ``files`` are handed to every container run as an image."""
        self.core = client.CoreV1Api(api_client)
        self.name = name
        self.namespaces = set(namespaces) if namespaces else None
        self.workdir = Path(workdir or os.getcwd())
        self._own_logdir = logdir is None  # a temporary one is removed by stop()
        self.logdir = Path(logdir or tempfile.mkdtemp(prefix=f"{name}-logs-"))
        self.logdir.mkdir(parents=True, exist_ok=True)
        self._running: dict[str, _Running] = {}  # pod uid -> process
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.errors: list[str] = []
        self.images = images
        self.files = dict(files or {})
        self._refused: set[str] = set()  # pods whose container the kubelet would not create

    # lifecycle ------------------------------------------------------------------------------
    def __enter__(self) -> "LocalNode":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self) -> "LocalNode":
        self._register_node()
        self._thread = threading.Thread(target=self._loop, name=f"{self.name}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=10)
        for run in self._running.values():
            stop_process(run.proc, 5, group=True)
        self._running.clear()
        # Without a kubelet nobody would confirm the deletion of our Pods (and their
        # namespace would stay Terminating): force-delete them like a kubelet would.
        with contextlib.suppress(Exception):
            for pod in self._pods():
                if pod.spec.node_name == self.name:
                    self._delete(pod)
        with contextlib.suppress(Exception):
            self.core.delete_node(self.name)
        if self._own_logdir:
            shutil.rmtree(self.logdir, ignore_errors=True)

    def logs(self, namespace: str, pod: str) -> str:
        """Output of a Pod's process (there is no kubelet, so no `kubectl logs`)."""
        path = self.logdir / f"{namespace}_{pod}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    # node -----------------------------------------------------------------------------------
    def _register_node(self) -> None:
        body = client.V1Node(
            metadata=client.V1ObjectMeta(
                name=self.name, labels={"kubernetes.io/hostname": self.name,
                                        "kubernetes.io/os": "linux"}
            )
        )
        with contextlib.suppress(ApiException):
            self.core.create_node(body)
        now = _now()
        self.core.patch_node_status(self.name, {"status": {
            "conditions": [{"type": "Ready", "status": "True", "reason": "LocalNodeReady",
                            "message": "tests.support.local_node",
                            "lastHeartbeatTime": now, "lastTransitionTime": now}],
            "capacity": {"cpu": "64", "memory": "256Gi", "pods": "1000"},
            "allocatable": {"cpu": "64", "memory": "256Gi", "pods": "1000"},
            "addresses": [{"type": "InternalIP", "address": "127.0.0.1"},
                          {"type": "Hostname", "address": self.name}],
        }}, _content_type=SMP)

    # main loop ------------------------------------------------------------------------------
    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self._sync()
            except Exception as exc:  # keep serving; tests see errors via node.errors
                self.errors.append(repr(exc))
                del self.errors[:-20]
            self._stop.wait(POLL_INTERVAL)

    def _pods(self) -> list[client.V1Pod]:
        if self.namespaces is None:
            return self.core.list_pod_for_all_namespaces().items
        pods: list[client.V1Pod] = []
        for ns in self.namespaces:
            pods += self.core.list_namespaced_pod(ns).items
        return pods

    def _sync(self) -> None:
        seen: set[str] = set()
        for pod in self._pods():
            uid = pod.metadata.uid
            seen.add(uid)
            node = pod.spec.node_name
            if node is None:
                if pod.metadata.deletion_timestamp is None and pod.status.phase == "Pending":
                    self._bind(pod)
                continue
            if node != self.name:
                continue
            if pod.metadata.deletion_timestamp is not None:
                self._delete(pod)
            elif uid not in self._running and uid not in self._refused and pod.status.phase == "Pending":
                self._run(pod)
        for uid, run in list(self._running.items()):
            if uid not in seen:  # deleted behind our back
                stop_process(run.proc, 5, group=True)
                del self._running[uid]
            elif not run.reported and run.proc.poll() is not None:
                # Reported once written: a write the API server failed (a timeout under
                # load) is tried again at the next sync, or the pod would run for ever.
                run.reported = self._report_exit(run)

    def _bind(self, pod: client.V1Pod) -> None:
        body = client.V1Binding(
            metadata=client.V1ObjectMeta(name=pod.metadata.name),
            target=client.V1ObjectReference(kind="Node", name=self.name, api_version="v1"),
        )
        with contextlib.suppress(ApiException):  # e.g. pod already gone
            self.core.create_namespaced_pod_binding(
                pod.metadata.name, pod.metadata.namespace, body, _preload_content=False
            )

    def _delete(self, pod: client.V1Pod) -> None:
        run = self._running.pop(pod.metadata.uid, None)
        if run:
            stop_process(run.proc, 5, group=True)
        with contextlib.suppress(ApiException):
            self.core.delete_namespaced_pod(
                pod.metadata.name, pod.metadata.namespace,
                body=client.V1DeleteOptions(grace_period_seconds=0,
                                            preconditions={"uid": pod.metadata.uid}),
            )

    # running a pod ---------------------------------------------------------------------------
    def _venv_env(self, pod: client.V1Pod) -> dict[str, str]:
        """What a pod's process gets from the node when its image is ignored."""
        return {
            "PATH": os.pathsep.join([str(Path(sys.prefix) / "bin"), os.environ.get("PATH", os.defpath)]),
            "HOME": os.environ.get("HOME", "/tmp"),
            "LANG": os.environ.get("LANG", "C.UTF-8"),
            "TMPDIR": os.environ.get("TMPDIR", tempfile.gettempdir()),
            "HOSTNAME": pod.metadata.name,
        }

    def _container_env(self, pod: client.V1Pod, container: client.V1Container) -> dict[str, str]:
        """The container's ``env``; ``$(VAR)`` refers to a variable defined before it there,
        as in Kubernetes (not to the image's)."""
        env: dict[str, str] = {}
        ns = pod.metadata.namespace
        for var in container.env or []:
            if var.value_from is None:
                env[var.name] = _expand(var.value or "", env)
                continue
            source = var.value_from
            if source.secret_key_ref is not None:
                ref = source.secret_key_ref
                data = self.core.read_namespaced_secret(ref.name, ns).data or {}
                env[var.name] = base64.b64decode(data[ref.key]).decode()
            elif source.config_map_key_ref is not None:
                ref = source.config_map_key_ref
                env[var.name] = (self.core.read_namespaced_config_map(ref.name, ns).data or {})[
                    ref.key
                ]
            elif source.field_ref is not None and source.field_ref.field_path in (
                "metadata.name", "metadata.namespace"
            ):
                env[var.name] = getattr(pod.metadata, source.field_ref.field_path.split(".")[1])
            else:
                raise ValueError(f"unsupported valueFrom for env {var.name}")
        return env

    def _run(self, pod: client.V1Pod) -> None:
        container = pod.spec.containers[0]
        ns, name = pod.metadata.namespace, pod.metadata.name
        log = self.logdir / f"{ns}_{name}.log"
        started = _now()
        argv = list(container.command or []) + list(container.args or [])
        try:
            image = self.images(pod) if self.images else None
            if not container.command and image is None:
                raise ValueError("local node needs an explicit container command")
            env = self._container_env(pod, container)
            argv = [_expand(a, env) for a in argv]
            with log.open("ab") as out:
                # killed if this node's thread ends
                streams = dict(stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                               start_new_session=True, preexec_fn=die_with_parent)
                if image is not None:
                    proc = self._start_image(pod, container, image, env, streams)
                else:
                    cwd = container.working_dir if container.working_dir and Path(
                        container.working_dir).is_dir() else self.workdir
                    proc = subprocess.Popen(argv, env={**self._venv_env(pod), **env}, cwd=cwd, **streams)
        except _Refused as exc:  # as the kubelet does: the container waits, the pod stays Pending
            self._refused.add(pod.metadata.uid)
            self.core.patch_namespaced_pod_status(name, ns, {"status": {"containerStatuses": [{
                "name": container.name, "ready": False, "restartCount": 0, "image": container.image, "imageID": "",
                "state": {"waiting": {"reason": "CreateContainerConfigError", "message": str(exc)}}}]}},
                _content_type=SMP)
            return
        except (OSError, ValueError, ApiException, KeyError) as exc:
            log.write_text(f"local node could not start {argv!r}: {exc}\n")
            self._write_status(pod.metadata, container.name, started, exit_code=127,
                               reason="StartError", message=str(exc)[:500])
            return
        self._running[pod.metadata.uid] = _Running(
            proc, ns, name, container.name, started, log,
            fallback_to_logs=container.termination_message_policy == "FallbackToLogsOnError")
        self._write_status(pod.metadata, container.name, started)

    def _start_image(self, pod: client.V1Pod, container: client.V1Container, image: Image,
                     env: dict[str, str], streams: dict) -> subprocess.Popen:
        serialize = self.core.api_client.sanitize_for_serialization
        identity = PodIdentity.of(serialize(pod.spec), serialize(container))
        refusal = identity.refusal(image)
        if refusal:
            raise _Refused(refusal)
        expand = (lambda words: [_expand(w, env) for w in words] if words else None)
        return image.start(expand(container.args), command=expand(container.command),
                           env={"HOSTNAME": pod.metadata.name, **env}, user=identity.user, groups=identity.groups,
                           capabilities=identity.capabilities, read_only=identity.read_only,
                           writable_tmp=identity.writable_tmp, files=self.files,
                           **streams)

    def _report_exit(self, run: _Running) -> bool:
        """Write the container's end into the pod's status; False if it must be tried again."""
        code = run.proc.returncode
        if code < 0:  # killed by a signal, report like a container runtime
            code = 128 - code
        meta = client.V1ObjectMeta(namespace=run.namespace, name=run.name)
        # As the kubelet does: the log's tail (at most 80 lines and 2048 bytes) on failure.
        message = _tail(run.log) if code and run.fallback_to_logs else ""
        try:
            self._write_status(meta, run.container, run.started_at, exit_code=code,
                               reason="Completed" if code == 0 else "Error", message=message)
        except ApiException as exc:
            return exc.status == 404  # the pod is gone: nothing left to tell
        return True

    def _write_status(self, meta, container: str, started: str, exit_code: int | None = None,
                      reason: str = "", message: str = "") -> None:
        now = _now()
        running = exit_code is None
        if running:
            phase, state = "Running", {"running": {"startedAt": started}}
        else:
            phase = "Succeeded" if exit_code == 0 else "Failed"
            state = {"running": None,  # the patch would merge it otherwise
                     "terminated": {"exitCode": exit_code, "reason": reason,
                                    "message": message or None,
                                    "startedAt": started, "finishedAt": now}}
        ready = "True" if running else "False"
        not_ready_reason = None if running else "PodCompleted"
        status = {
            "phase": phase,
            "hostIP": "127.0.0.1",
            "podIP": "127.0.0.1",
            "startTime": started,
            "conditions": [
                {"type": "PodScheduled", "status": "True", "lastTransitionTime": started},
                {"type": "Initialized", "status": "True", "lastTransitionTime": started},
                {"type": "ContainersReady", "status": ready, "lastTransitionTime": now,
                 "reason": not_ready_reason},
                {"type": "Ready", "status": ready, "lastTransitionTime": now,
                 "reason": not_ready_reason},
            ],
            "containerStatuses": [{
                "name": container, "ready": running, "started": running, "restartCount": 0,
                "image": "local", "imageID": "", "state": state,
            }],
        }
        self.core.patch_namespaced_pod_status(
            meta.name, meta.namespace, {"status": status}, _content_type=SMP
        )


def _tail(log: Path, max_lines: int = 80, max_bytes: int = 2048) -> str:
    data = log.read_bytes()[-max_bytes:]
    return b"\n".join(data.splitlines()[-max_lines:]).decode(errors="replace")


def _expand(value: str, env: dict[str, str]) -> str:
    """Kubernetes-style $(VAR) expansion (no shell): ``$(NAME)`` of a defined variable is
    its value, ``$$`` is one literal ``$``, and anything else stays as written."""
    out, i = [], 0
    while i < len(value):
        if value.startswith("$$", i):
            out.append("$")
            i += 2
            continue
        if value.startswith("$(", i):
            end = value.find(")", i + 2)
            if end != -1 and value[i + 2:end] in env:
                out.append(env[value[i + 2:end]])
                i = end + 1
                continue
        out.append(value[i])
        i += 1
    return "".join(out)
