"""Each chart's version names one content: `helm history` and `helm rollback` show only
the chart's version (and the app's), so two revisions of different templates under one
version cannot be told apart. A change to any file of a chart needs a new version, and its
digest pinned here."""

import ast
import fnmatch
import hashlib
import subprocess
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
CHARTS = REPO / "charts"
# Every commit of main may reach dev (its image tag is the commit), so a version pinned in
# any commit is released. Before this one, versions were pinned again within a session:
# rates-api 0.12.0 and 0.13.0, rates-controller 0.11.0 and 0.12.1 name several contents (as
# do most versions from before pinning: rates-api up to 0.7.0, rates-controller up to 0.9.0).
PINS_FROZEN_SINCE = "43e108a"

# version -> SHA-256 of the chart's files, oldest first; the last is the current one.
PINS = {
    "rates-api": {
        "0.8.0": "c30acb1af357cad24e4969aa5f706aceb46ac768202c361842495579a6d0980d",
        "0.9.0": "708a75ca72d433684aa4cfba36aef34782452f9200a2d39b454d7980bc3df5f0",
        "0.10.0": "a7bdaf18e47e171976b819e636f8763bb29f7e1995eb8a5e46e228e5942dcd20",
        "0.11.0": "efffd148018a1d4c9bc2ba40567254fa5ff2de116a69c785c1d706e2ebce17bb",
        "0.12.0": "dcc99a6fd0f72432cce4031bd6a74386d6fefe369a84e849b2e88ae3e5f26ba3",
        "0.13.0": "47c1eea75674655fbe61910071be16bdb5edbc3aefca5cc9a152f50332e3ead0",
        "0.13.1": "b93e6cb1d1f8d0149ae5d780306aa51a9a3067f35ddec01fcea40c6e5bdab706",
        "0.14.0": "f42bc82d5c7262994ff85343096f27d2ec65f3f0ec0a66abea1817d21bb7d5c9",
        "0.15.0": "1c8bec404aa9b0845132cae275d0997a6cadb2c90aadea5f4b4fcc40f73c320e",
        "0.15.1": "66373d1a51cd2f747bf277e612c7073dca67e296ab9c842d8426abd04dbd57f7",
        "0.15.2": "35fc6fbc2ca38a58fc32e55c55d6b445e045e0d07d3201c788e15285bae18278",
        "0.15.3": "3c2d248f85349b0f29b5553d15213f6e77c25e159097f00af435c2e31b002a52",
        "0.15.4": "fce53d304d80458ade360867dff4094d53f4df801ac53e299caf70856512cefd",
        "0.16.0": "fa84b2e6c213678f125cac5f34c1e4a7e38dafeb6207aed430ec280ac5583c94",
        "0.16.1": "6d917a2bfada38147064683f8e15727e5472c0ed4f7a318e42d09876c1e917a6",
        "0.16.2": "3155b63399d167f4b9e1619fedcac0be75c8f956a95167e0723df3097ef33ef1",
        "0.16.3": "1db99e215fea07f692769022dd22c07c6067957bb759c1aac2aec25e1bdb1c71",
        "0.16.4": "0d02794cb299f550edf8ae8093a7d6cfbac2d63a47a3348d201c4cdd6d24d1d8",
        "0.17.0": "feeb4656baf3a7dfaf280c4a755161504dd04023f9f7453f0f9901d8404b9fd6",
        "0.17.1": "1155b1ea869b16dfb08987dff60bde845f72d0312d17de46571f23dd096b2c9a",
        "0.17.2": "48311f122468e54c80e06ae1731576e0ccaa37fdfd2ff09234407d7bccc49eeb",
        "0.17.3": "d1b2bab4c99e13b0f5e56fe24f0bd31e428d599fddd18e4a4d6cf7a3b688f69a",
        "0.17.4": "e17cd938b7990abe1ad3777ada8409731eb3533e86d7039084aa028179d14114",
        "0.17.5": "830a6bfe1a9fdf7726e0c4fe35e4a4aac135089d71b29ce6083c3e465f2901ed",
        "0.17.6": "e994c50ffba015aef854fd889ed831c90e905071de2260ebe3ad0dba7dfbb3af",
        "0.17.7": "729905b31df5e36ad44e0463f2a9a743e4f3e7a71eddb113a77c4f14e398b478",
        "0.18.0": "bcc31bf4cc35610622953e1b47fcdae215208d5257c61826a0b67ae4b4446668",
    },
    "rates-controller": {
        "0.9.0": "cf6bb74814a8a7d772f09e2d8294dd812ee848db0954022fa67b2a750a38a2fc",
        "0.10.0": "4a00140f4d25d7584bb47f25a3ef6768b96a7cd13ea233dd8c3f4a6f8aa9acb9",
        "0.11.0": "e9f7141c6c4641cf4a69e987fa8967f049d4d4dfc1de48044789c9eeacec84c3",
        "0.12.0": "59ba5348e8a3351692aa91252f9d6e3abd8e7e157eebf270001b3ebe16624230",
        "0.12.1": "85d4214c2f33f1810237eb1576b848f0790ee98f43795903fa7afd1af08f481a",
        "0.12.2": "665293cb06dbaa46a00c24f72a5855650fdd5521177eb8c17edeaefe97fc07f5",
        "0.13.0": "5b559c275f0e18a593972ce7de09b473d7eeaa9083fe044c3870e72db0827b5e",
        "0.13.1": "42a63279e552f9066468e7af63ff2f7a72e03bc37d1417657c4f1ab56263f3ad",
        "0.13.2": "aca7d677198a81fa743f83205dc57ebede74a328cc51522a9727f05c606c95cc",
        "0.13.3": "db21abe0255c6a2b211e2be3648396a30563bda878a4ce4ccd54dbfe6924f9d0",
        "0.14.0": "03627b8de6bfaba0b80bcfd435a41c0670482f163778da0308ff5a03bcc173ef",
        "0.14.1": "bb9196ecd7732c92ec874c93b3a3d90ffc1995f32a8643749d2831cec9eeff89",
        "0.14.2": "01082f887dd4412b9f73243626d25f77ef25785401b6a3ffa77f8f3a1363ba4f",
        "0.14.3": "06a0f49a16d7c90fa145f0b34c627e9bea51604a23b4c42a11baa06b10713996",
        "0.14.4": "3b5c58e5141480a23eead36e118fbb869a763b16c655dfd721cb8350662c831e",
    },
}


def packaged(chart: Path) -> list[Path]:
    """The chart's files that `helm package` takes: .helmignore's patterns (ours are names
    and globs, and directories with a trailing /) leave out an editor's swap files."""
    ignore = [line.strip() for line in (chart / ".helmignore").read_text().splitlines()
              if line.strip() and not line.startswith("#")]
    def ignored(path: Path) -> bool:
        relative = path.relative_to(chart)
        return any(fnmatch.fnmatch(relative.name, p) or fnmatch.fnmatch(relative.as_posix(), p)
                   or (p.endswith("/") and p.rstrip("/") in relative.parts[:-1]) for p in ignore)
    return sorted(p for p in chart.rglob("*") if p.is_file() and not ignored(p))


def digest(chart: Path) -> str:
    sha = hashlib.sha256()
    for path in packaged(chart):
        sha.update(path.relative_to(chart).as_posix().encode() + b"\0")
        sha.update(hashlib.sha256(path.read_bytes()).digest())
    return sha.hexdigest()


def semver(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in version.split("."))


@pytest.mark.parametrize("name", sorted(PINS))
def test_a_changed_chart_has_a_new_version(name):
    chart = CHARTS / name
    version = yaml.safe_load((chart / "Chart.yaml").read_text())["version"]
    pins = PINS[name]
    assert list(pins) == sorted(pins, key=semver) and list(pins)[-1] == version, (
        f"{name} {version}: pin it in {__file__} as its newest version")
    assert pins[version] == digest(chart), (
        f"{name}'s files are no longer those of {version}: give Chart.yaml a new version "
        f"and pin it here with {digest(chart)} (never repin a version: it may be released)")


def test_the_pins_cover_every_chart():
    assert {p.name for p in CHARTS.iterdir() if (p / "Chart.yaml").exists()} == set(PINS)


def test_what_helm_leaves_out_does_not_count(tmp_path):
    chart = tmp_path / "chart"
    (chart / "templates").mkdir(parents=True)
    (chart / ".helmignore").write_text("# comment\n*.swp\n*~\n.git/\n")
    (chart / "Chart.yaml").write_text("version: 1.0.0\n")
    (chart / "templates" / "a.yaml").write_text("a: 1\n")
    before = digest(chart)
    (chart / "templates" / ".a.yaml.swp").write_text("x")
    (chart / "templates" / "a.yaml~").write_text("x")
    (chart / ".git").mkdir()
    (chart / ".git" / "HEAD").write_text("x")
    assert digest(chart) == before
    (chart / "templates" / "b.yaml").write_text("b: 1\n")
    assert digest(chart) != before


def _pins_at(commit: str) -> dict:
    text = subprocess.run(["git", "-C", str(REPO), "show", f"{commit}:{Path(__file__).relative_to(REPO)}"],
                          capture_output=True, text=True, check=True).stdout
    for node in ast.parse(text).body:
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", None) == "PINS":
            return ast.literal_eval(node.value)
    return {}


def test_no_committed_version_is_pinned_again():
    """The test above compares the chart with PINS as they are now, which the same change
    can edit: here every commit's PINS since PINS_FROZEN_SINCE must agree with today's."""
    log = subprocess.run(["git", "-C", str(REPO), "log", "--format=%H", f"{PINS_FROZEN_SINCE}..HEAD", "--",
                          str(Path(__file__).relative_to(REPO))], capture_output=True, text=True)
    if log.returncode != 0:
        pytest.skip(f"no git history here: {log.stderr.strip()}")
    repinned = {(name, version, commit[:9])
                for commit in [PINS_FROZEN_SINCE, *log.stdout.split()] for name, pins in _pins_at(commit).items()
                for version, pinned in pins.items() if PINS.get(name, {}).get(version, pinned) != pinned}
    assert not repinned, f"versions pinned again with other contents (give the chart a new version): {repinned}"
