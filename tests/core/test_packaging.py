"""Each image installs one deployable and what its pyproject declares, nothing else
(`pip install -c requirements.txt core <deployable>`). The test virtualenv holds every
package and every dependency at once, so an import that a package does not declare passes
every other test and fails only in its image. These tests find it without building one;
the last one builds each image (tests/support/images.py) and lists what it holds."""

import ast
import json
import re
import sys
import tomllib
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.support import dockerfile

REPO = Path(__file__).resolve().parents[2]
# folder -> its distribution; core is in every image, cli (ratesctl) in none.
IMAGES = {"api": "rates-api", "ingest-job": "rates-ingest", "controller": "rates-controller"}
FOLDERS = {**IMAGES, "core": "rates-core", "cli": "ratesctl"}


def imported_modules(folder: Path) -> set[str]:
    """Top-level names of the modules imported anywhere in ``folder``, stdlib aside."""
    names = set()
    for path in folder.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                names.add(node.module.split(".")[0])
    return names - set(sys.stdlib_module_names)


def installed_with(distribution: str) -> set[str]:
    """``distribution`` and everything it needs, transitively, as pip would install them."""
    seen, todo = set(), [distribution]
    while todo:
        name = canonicalize_name(todo.pop())
        if name in seen:
            continue
        seen.add(name)
        for line in metadata.requires(name) or []:
            requirement = Requirement(line)
            if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
                todo.append(requirement.name)
    return seen


def providers(module: str) -> set[str]:
    return {canonicalize_name(d) for d in metadata.packages_distributions().get(module, [])}


def declared(folder: str) -> set[str]:
    """The distributions ``folder``'s pyproject.toml names itself, and the distribution."""
    project = tomllib.loads((REPO / folder / "pyproject.toml").read_text())["project"]
    return {canonicalize_name(Requirement(r).name) for r in project["dependencies"]} | {FOLDERS[folder]}


@pytest.mark.parametrize("folder", sorted(FOLDERS))
def test_every_module_a_deployable_imports_is_declared_by_its_own_pyproject(folder):
    # Not only brought along by something else: a dependency that stops needing it, or
    # moves it to an extra, would break the deployable with nothing here changed.
    own = declared(folder)
    missing = {module: sorted(providers(module)) for module in imported_modules(REPO / folder)
               if not providers(module) & own}
    assert not missing, f"{folder} imports what its pyproject.toml does not declare: {missing}"


@pytest.mark.parametrize("folder", sorted(IMAGES))
def test_each_image_copies_and_installs_every_package_of_ours_its_deployable_needs(folder):
    text = (REPO / folder / "Dockerfile").read_text()
    ours = {dist: name for name, dist in FOLDERS.items()}
    needed = {ours[dist] for dist in installed_with(IMAGES[folder]) if dist in ours}
    copied = set(re.findall(r"^COPY (\S+) /src/\1$", text, re.M)) - {"requirements.txt"}
    install = re.search(r"pip install -c /src/requirements\.txt ([^\\\n&]+)", text).group(1)
    assert needed == copied == {path.removeprefix("/src/") for path in install.split()}, text


@pytest.mark.parametrize("folder", sorted(IMAGES))
def test_each_image_runs_as_a_numeric_user_and_group_that_are_not_root(folder):
    """Numeric, so that a pod's runAsNonRoot can check it without a passwd file; not 0,
    which checkov's own rule misses (it knows only the name root)."""
    [*_, final] = dockerfile.parse((REPO / folder / "Dockerfile").read_text())
    user, _, group = final.user.partition(":")
    assert user.isdigit() and group.isdigit(), final.user
    assert int(user) != 0 and int(group) != 0, final.user


def test_the_check_finds_an_undeclared_import(tmp_path):
    (tmp_path / "m.py").write_text("import yaml\nfrom flask import Flask\nimport json\nfrom . import x\n")
    assert imported_modules(tmp_path) == {"yaml", "flask"}
    assert not providers("yaml") & installed_with("rates-ingest")
    assert providers("flask") & declared("api")
    # Brought along by kubernetes, but the controller imports it itself.
    assert providers("urllib3") & installed_with("rates-controller") and providers("urllib3") & declared("controller")


LIST_DISTRIBUTIONS = ("import json; from importlib import metadata; "
                      "print(json.dumps({d.metadata['Name']: d.version for d in metadata.distributions()}))")


def runtime_pins(*files: str) -> dict[str, str]:
    """{name: version} of requirements.txt's pins, or of ``files``' (-r lines aside)."""
    pins = {}
    for name in files or ("requirements.txt",):
        for line in (REPO / name).read_text().splitlines():
            requirement = line.split("#")[0].strip()
            if requirement and not requirement.startswith("-r "):
                parsed = Requirement(requirement)
                [specifier] = parsed.specifier  # exact pins only
                assert specifier.operator == "==", line
                pins[canonicalize_name(parsed.name)] = specifier.version
    return pins


def test_the_test_environment_holds_only_pinned_versions():
    # CI makes a fresh virtualenv every run: anything unpinned is whatever is newest that
    # day. setuptools is the virtualenv's own (`python -m venv`); ours are editable.
    pins = runtime_pins("requirements.txt", "requirements-dev.txt", "constraints-dev.txt")
    held = {canonicalize_name(d.metadata["Name"]): d.version for d in metadata.distributions()}
    unpinned = {name: version for name, version in held.items()
                if name not in {*FOLDERS.values(), "setuptools"} and pins.get(name) != version}
    assert not unpinned, (f"the test environment holds these, pinned nowhere at that version: {unpinned}; "
                          "pin them in constraints-dev.txt (see its head), or make .venv again")


@pytest.mark.parametrize("folder", sorted(IMAGES))
def test_each_built_image_holds_its_deployable_and_its_dependencies_and_nothing_else(images, folder):
    """No pip or setuptools (a way to install more at run time), nothing undeclared, and
    every dependency at the version requirements.txt pins, so that a later build holds
    what the tests ran against."""
    done = images(folder).run(command=["python", "-c", LIST_DISTRIBUTIONS])
    assert done.returncode == 0, done.stderr
    in_image = {canonicalize_name(name): version for name, version in json.loads(done.stdout).items()}
    assert set(in_image) == installed_with(IMAGES[folder])
    pins = runtime_pins()
    unpinned = {name: version for name, version in in_image.items() if name not in FOLDERS.values()
                and pins.get(name) != version}
    assert not unpinned, f"not pinned in requirements.txt at these versions: {unpinned}"


def test_the_build_context_leaves_out_local_build_output_and_terraform_state():
    # setuptools packs whatever a non-editable install left in build/lib into the wheel: a
    # migration deleted from the source would still be applied by the image's hook.
    context = dockerfile.Context.of(REPO)
    for leftover in ("core/build/lib/rates_core/migrations/0099_stale.sql", "api/dist/rates_api-0.1.0.whl",
                     "terraform-eks/cluster/.terraform/providers/x", "terraform-eks/cluster/terraform.tfstate.backup"):
        assert context.ignored(leftover), leftover
    assert not context.ignored("core/rates_core/migrations/0001_base_tables.sql")


def test_every_package_is_built_by_one_pinned_setuptools():
    # pip's -c does not reach the isolated build environment: without an exact pin here,
    # whatever setuptools is newest that day builds the images' wheels (and picks which
    # package data, the migrations among them, they hold).
    requires = {folder: tomllib.loads((REPO / folder / "pyproject.toml").read_text())["build-system"]["requires"]
                for folder in FOLDERS}
    assert len({tuple(r) for r in requires.values()}) == 1, requires
    [[build]] = {tuple(r) for r in requires.values()}
    assert Requirement(build).name == "setuptools" and next(iter(Requirement(build).specifier)).operator == "=="
