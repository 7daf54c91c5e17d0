"""Each chart's version names one content: `helm history` and `helm rollback` show only
the chart's version (and the app's), so two revisions of different templates under one
version cannot be told apart. A change to any file of a chart needs a new version, and its
digest pinned here."""

import hashlib
from pathlib import Path

import pytest
import yaml

CHARTS = Path(__file__).resolve().parents[2] / "charts"

# version -> SHA-256 of the chart's files, oldest first; the last is the current one.
PINS = {
    "rates-api": {
        "0.8.0": "c30acb1af357cad24e4969aa5f706aceb46ac768202c361842495579a6d0980d",
    },
    "rates-controller": {
        "0.9.0": "cf6bb74814a8a7d772f09e2d8294dd812ee848db0954022fa67b2a750a38a2fc",
    },
}


def digest(chart: Path) -> str:
    sha = hashlib.sha256()
    for path in sorted(p for p in chart.rglob("*") if p.is_file() and "__pycache__" not in p.parts):
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
        f"and pin it here with {digest(chart)}")


def test_the_pins_cover_every_chart():
    assert {p.name for p in CHARTS.iterdir() if (p / "Chart.yaml").exists()} == set(PINS)
