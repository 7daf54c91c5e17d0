"""The image sandbox of tests/support/images.py keeps the promises the image tests rely on:
the root is read-only, the process is the image's USER with no way to gain privileges, and
only /tmp, /dev/shm and the handed-in files are there beyond the image and its base."""

import json
import textwrap

import pytest

from tests.support.images import DockerfileError, ignored, instructions, parse_dockerfile

PROBE = textwrap.dedent("""
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
        "given": open("/run/given").read(), "home": os.environ["HOME"], "path": os.environ["PATH"],
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


def test_only_tmp_and_dev_shm_are_writable(probe, run_probe):
    assert probe["tmp"] is True and probe["shm"] is True and probe["given"] == "handed in"
    assert {probe[place] for place in ("root", "venv", "etc", "run")} <= {"Permission denied", "Read-only file system"}
    # Read-only, not only someone else's: root in the container cannot write there either.
    as_root = run_probe(user="0:0")
    assert {as_root[place] for place in ("root", "venv", "etc", "run")} == {"Read-only file system"}
    assert as_root["tmp"] is True


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


def test_the_host_is_out_of_reach(images, tmp_path):
    (tmp_path / "secret").write_text("host only")
    done = images("ingest-job").run(command=["python", "-c", f"open({str(tmp_path / 'secret')!r})"])
    assert done.returncode == 1 and "FileNotFoundError" in done.stderr


def test_dockerfile_instructions_are_read_as_docker_reads_them():
    text = "# c\nFROM base AS build\nENV A=1 \\\n    B=$A:2\nRUN echo \\\n  hi\n\nFROM base\nCOPY --from=build /x /x\n" \
           "USER 10001:10001\nCMD [\"run\", \"it\"]\n"
    assert instructions(text)[2] == ("RUN", "echo    hi")
    build, final = parse_dockerfile(text)
    assert build.name == "build" and build.env["A"] == "1" and build.env["B"] == "1:2"
    assert final.steps == [("COPY", ["--from=build", "/x", "/x"])]
    assert (final.user, final.cmd, final.entrypoint) == ("10001:10001", ["run", "it"], [])
    with pytest.raises(DockerfileError):
        parse_dockerfile("FROM base\nHEALTHCHECK CMD true\n")
    with pytest.raises(DockerfileError):
        parse_dockerfile("FROM base\nCMD run it\n")


def test_dockerignore_patterns_leave_out_what_docker_leaves_out():
    patterns = ["**/__pycache__", "**/*.egg-info", ".venv", "tests"]
    assert ignored("core/rates_core/__pycache__/db.cpython-311.pyc", patterns)
    assert ignored("api/rates_api.egg-info/PKG-INFO", patterns)
    assert ignored(".venv/bin/python", patterns) and ignored("tests/conftest.py", patterns)
    assert not ignored("core/rates_core/db.py", patterns) and not ignored("api/tests.txt", patterns)
