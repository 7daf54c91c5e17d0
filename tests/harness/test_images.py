"""The image sandbox of tests/support/images.py keeps the promises the image tests rely on:
the root is read-only, the process is the image's USER with no way to gain privileges, and
only /tmp, /dev/shm and the handed-in files are there beyond the image and its base; and
tests/support/dockerfile.py reads Dockerfiles and .dockerignore as Docker does."""

import json
import os
import signal
import textwrap
import time

import pytest

from tests.support.dockerfile import Context, DockerfileError, ignore_pattern, instructions, parse
from tests.support import images as images_module
from tests.support.images import REPO_ROOT, PodIdentity
from tests.support.poll import wait_for
from tests.support.proc import running

PROBE = f"REPO = {str(REPO_ROOT)!r}\n" + textwrap.dedent("""
    import json, os, pathlib
    def writable(path):
        try:
            pathlib.Path(path).write_text("x")
            return True
        except OSError as exc:
            return exc.strerror
    status = dict(line.split(":\\t", 1) for line in open("/proc/self/status").read().splitlines() if ":\\t" in line)
    print(json.dumps({
        "uid": os.getuid(), "gid": os.getgid(), "groups": os.getgroups(), "cwd": os.getcwd(),
        "no_new_privs": status["NoNewPrivs"].strip(), "cap_eff": status["CapEff"].strip(),
        "root": writable("/x"), "venv": writable("/opt/venv/x"), "etc": writable("/etc/x"),
        "tmp": writable("/tmp/x"), "shm": writable("/dev/shm/x"), "run": writable("/run/given"),
        "run_new": writable("/run/new"), "given": open("/run/given").read(), "home": os.environ["HOME"],
        "path": os.environ["PATH"], "dev": sorted(os.listdir("/dev")), "repo": os.path.exists(REPO),
    }))
""")


@pytest.fixture(scope="module")
def run_probe(images, tmp_path_factory):
    given = tmp_path_factory.mktemp("given") / "file"
    given.write_text("handed in")

    def run(**options):
        done = images("ingest-job").run(command=["python", "-c", PROBE], files={"/run/given": given}, **options)
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)
    return run


@pytest.fixture(scope="module")
def probe(run_probe):
    return run_probe()


def test_a_container_runs_as_the_images_user_without_privileges(probe):
    assert (probe["uid"], probe["gid"], probe["groups"]) == (10001, 10001, [])
    assert probe["no_new_privs"] == "1" and int(probe["cap_eff"], 16) == 0
    assert probe["cwd"] == "/tmp"  # the Dockerfile's WORKDIR
    assert probe["path"].startswith("/opt/venv/bin:")  # the Dockerfile's ENV
    assert probe["home"] == "/"  # as a container runtime sets it for a user without a passwd entry


def test_only_dev_shm_is_writable_and_tmp_only_where_the_pod_mounts_a_volume(probe, run_probe):
    assert probe["shm"] is True and probe["given"] == "handed in"
    places = ("root", "venv", "etc", "run", "run_new", "tmp")
    assert {probe[place] for place in places} <= {"Permission denied", "Read-only file system"}
    # Read-only, not only someone else's: root in the container cannot write there either.
    as_root = run_probe(user="0:0")
    assert {as_root[place] for place in places} == {"Read-only file system"}
    with_volume = run_probe(writable_tmp=True)  # an emptyDir at /tmp, as the API's chart mounts
    assert with_volume["tmp"] is True and with_volume["root"] in {"Permission denied", "Read-only file system"}


def test_root_in_a_container_cannot_undo_the_read_only_root(images):
    # Docker's default capabilities, which have no CAP_SYS_ADMIN; the charts drop even those.
    done = images("ingest-job").run(command=["/bin/mount", "-o", "remount,rw", "/"], user="0:0")
    assert done.returncode != 0
    as_charts_run_it = images("ingest-job").run(
        command=["python", "-c", "print(open('/proc/self/status').read())"], user="0:0", capabilities=frozenset())
    assert "CapBnd:\t0000000000000000" in as_charts_run_it.stdout, as_charts_run_it.stderr


def test_only_a_few_devices_are_there(probe):
    assert set(probe["dev"]) == {"null", "zero", "full", "random", "urandom", "tty", "fd", "stdin", "stdout",
                                 "stderr", "shm"}


def test_a_writable_root_leaves_the_image_as_it_was(images):
    image = images("ingest-job")
    write = "open('/opt/venv/written', 'w').write('x'); print(open('/opt/venv/written').read())"
    done = image.run(command=["python", "-c", write], user="0:0", read_only=False)
    assert done.stdout.strip() == "x", done.stderr
    assert not (image.rootfs / "opt" / "venv" / "written").exists()


def test_a_user_from_the_pod_replaces_the_images(images):
    done = images("ingest-job").run(command=["python", "-c", "import os; print(os.getuid(), os.getgid())"],
                                    user="20002:30003")
    assert done.stdout.split() == ["20002", "30003"], done.stderr


def test_the_host_is_out_of_reach(probe):
    assert os.path.exists(REPO_ROOT) and probe["repo"] is False


def test_dockerfile_instructions_are_read_as_docker_reads_them():
    text = ("# c\nFROM base AS build\nENV A=1 \\\n    B=$A:2\nENV A=2 C=$A D=${UNSET}x\nRUN echo \\\n  hi\n\n"
            "FROM base\nWORKDIR /app\nCOPY --from=build /x /x\nCOPY conf.py .\nCOPY a b lib/\n"
            "USER 10001\nCMD [\"run\", \"it\"]\n")
    assert instructions(text)[3] == ("RUN", "echo    hi")
    build, final = parse(text)
    # Each ENV sees the variables as they were before it; unset is empty.
    assert build.name == "build" and (build.env["A"], build.env["B"]) == ("2", ":2")
    assert (build.env["C"], build.env["D"]) == ("1", "x")
    assert [(s.kind, s.args) for s in final.steps] == [
        ("WORKDIR", ["/app"]), ("COPY", ["--from=build", "/x", "/x"]), ("COPY", ["conf.py", "/app/"]),
        ("COPY", ["a", "b", "/app/lib/"])]
    assert (final.user, final.cmd, final.entrypoint) == ("10001", ["run", "it"], [])
    assert final.context_sources() == ["conf.py", "a", "b"]
    for unsupported in ("HEALTHCHECK CMD true", "CMD run it", "ENV A 1", "COPY --chown=1 a /b", "ENV A=${B:-c}",
                        "ENV A='$B'", "ENV A=\\$B", "COPY a $D/"):
        with pytest.raises(DockerfileError):
            parse(f"FROM base\n{unsupported}\n")


def test_dockerignore_patterns_leave_out_what_docker_leaves_out(tmp_path):
    (tmp_path / ".dockerignore").write_text("# c\n**/__pycache__\n**/*.egg-info\n.venv\n/tests\n*.md\n")
    context = Context.of(tmp_path)
    assert context.ignored("core/rates_core/__pycache__/db.cpython-311.pyc")
    assert context.ignored("__pycache__/x.pyc") and context.ignored("api/rates_api.egg-info/PKG-INFO")
    assert context.ignored(".venv/bin/python") and context.ignored("tests/conftest.py")
    assert context.ignored("README.md") and not context.ignored("api/README.md")  # * stops at /
    assert not context.ignored("core/rates_core/db.py") and not context.ignored("api/tests/x.py")
    with pytest.raises(DockerfileError):
        ignore_pattern("!keep.md")
    assert ignore_pattern("[!a]b").fullmatch("!b") and not ignore_pattern("[!a]b").fullmatch("cb")  # as in Go


def test_copy_takes_a_directory_as_docker_does(tmp_path):
    source = tmp_path / "ctx" / "pkg"
    (source / "empty").mkdir(parents=True)
    (source / "__pycache__").mkdir()
    (source / "__pycache__" / "m.pyc").write_text("x")
    (source / "m.py").write_text("print()")
    (source / "link").symlink_to("m.py")
    (tmp_path / "ctx" / ".dockerignore").write_text("**/__pycache__\n")
    Context.of(tmp_path / "ctx").copy("pkg", tmp_path / "out" / "pkg", into_directory=False)
    out = tmp_path / "out" / "pkg"
    assert sorted(p.name for p in out.iterdir()) == ["empty", "link", "m.py"]
    assert os.readlink(out / "link") == "m.py"


def test_an_image_is_built_as_docker_builds_it_whatever_the_callers_umask(tmp_path):
    (tmp_path / "ctx").mkdir()
    (tmp_path / "ctx" / "m.py").write_text("print()")
    stages = parse("FROM python:3.11-slim\nWORKDIR /app\nCOPY m.py /app/\nRUN mkdir -p /opt/made/deep\n")
    previous = os.umask(0o077)  # a locked-down shell's
    try:
        images_module._build_into(tmp_path / "image", stages, Context.of(tmp_path / "ctx"), "probe")
        assert os.umask(0o077) == 0o077  # given back
    finally:
        os.umask(previous)
    rootfs = tmp_path / "image" / "rootfs"
    for directory in ("app", "opt", "opt/made", "opt/made/deep", "usr"):
        assert (rootfs / directory).stat().st_mode & 0o777 == 0o755, directory


ESCAPE = textwrap.dedent("""
    import os
    os.makedirs("/tmp/e", exist_ok=True)
    os.chroot("/tmp/e")
    for _ in range(30):
        os.chdir("..")
    os.chroot(".")
    print(os.path.exists(REPO))
""")


def test_root_cannot_climb_out_of_its_root(images):
    # The classic chroot escape, with Docker's default capabilities (CAP_SYS_CHROOT among them):
    # with pivot_root, there is no host root left above this one to climb to.
    done = images("ingest-job").run(command=["python", "-c", f"REPO = {str(REPO_ROOT)!r}\n" + ESCAPE], user="0:0",
                                    writable_tmp=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"


def test_the_container_sees_its_own_processes_and_cannot_change_the_kernel(images):
    look = ("import os\nprint(os.getpid(), sorted(int(p) for p in os.listdir('/proc') if p.isdigit()))\n"
            "try:\n    open('/proc/sys/kernel/hostname', 'w').write('x')\nexcept OSError as e:\n    print(e.strerror)\n")
    done = images("ingest-job").run(command=["python", "-c", look], user="0:0")
    assert done.stdout.splitlines() == ["1 [1]", "Read-only file system"], done.stderr


def test_a_container_is_pid_1_and_ends_with_its_runtime(images):
    image = images("ingest-job")
    marker = f"sandbox-test-{os.getpid()}"
    process = image.start(command=["python", "-c", "import time; time.sleep(60)", marker])
    try:
        assert wait_for(lambda: host_pids_with(marker, besides=process.pid), timeout=10,
                        what="the container to start")
        process.send_signal(signal.SIGTERM)  # passed on; PID 1 with no handler ignores it, as in a pod
        time.sleep(1)
        assert process.poll() is None and host_pids_with(marker, besides=process.pid)
        process.kill()  # the runtime dies: the namespace, and the container, go with it
        assert process.wait(timeout=10) == -signal.SIGKILL
        assert wait_for(lambda: not host_pids_with(marker, besides=process.pid), timeout=10,
                        what="the container to end")
    finally:
        process.kill()
        process.wait()


def host_pids_with(marker: str, besides: int) -> list[int]:
    """Live (not zombie) host processes but ``besides`` whose command line holds ``marker``."""
    found = []
    for entry in (e for e in os.listdir("/proc") if e != str(besides)):
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as cmdline:
                if marker.encode() in cmdline.read() and running(int(entry)):
                    found.append(int(entry))
        except (OSError, ValueError):
            continue
    return found


def test_a_pods_tmp_is_writable_only_with_a_writable_emptydir_there():
    container = {"volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}]}
    assert PodIdentity.of({"volumes": [{"name": "tmp", "emptyDir": {}}]}, container).writable_tmp
    assert not PodIdentity.of({}, {}).writable_tmp
    assert not PodIdentity.of({"volumes": [{"name": "tmp", "emptyDir": {}}]},
                              {"volumeMounts": [{"name": "tmp", "mountPath": "/tmp", "readOnly": True}]}).writable_tmp
    assert not PodIdentity.of({"volumes": [{"name": "tmp", "emptyDir": {}}]},
                              {"volumeMounts": [{"name": "tmp", "mountPath": "/var/tmp"}]}).writable_tmp
