"""Release files: the lock files agree with pyproject.toml, `trustcard --version`, LICENSE and
CHANGELOG.md.

The lock check is a cheap, offline one: every dependency pyproject.toml names is pinned (with
hashes) at a version its specifier admits, and the lock names no direct dependency that
pyproject.toml dropped. The image build's `pip check` verifies the rest (transitive requirements).
"""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
VIA_PYPROJECT = "trustcard (pyproject.toml)"
# Overridden privately by trustcard/worker/worker_pool.py: held to the tested minor version.
PRIVATE_API_PACKAGES = ("celery", "kombu", "billiard")


@dataclass
class Pin:
    version: Version
    hashes: list[str] = field(default_factory=list)
    via: list[str] = field(default_factory=list)


def read_lock(path: Path) -> dict[str, Pin]:
    """name -> pin of a `uv pip compile --generate-hashes` (or pip-compile) output."""
    pins: dict[str, Pin] = {}
    current: Pin | None = None
    for line in path.read_text().splitlines():
        if match := re.match(r"^([A-Za-z0-9._-]+)==([^ ;\\]+)", line):
            current = Pin(Version(match[2]))
            pins[canonicalize_name(match[1])] = current
        elif current is not None and (digest := re.search(r"--hash=(sha256:[0-9a-f]{64})", line)):
            current.hashes.append(digest[1])
        elif current is not None and (via := re.match(r"^\s+#\s+(?:via\s+)?(?!via$)(.+)$", line)):
            current.via.append(via[1].strip())
    return pins


def lock_problems(requirements: list[str], pins: dict[str, Pin]) -> list[str]:
    """What is wrong between pyproject.toml's requirements and a lock file's pins."""
    problems = []
    wanted: dict[str, Requirement] = {
        canonicalize_name(Requirement(r).name): Requirement(r) for r in requirements
    }
    for name, requirement in wanted.items():
        pin = pins.get(name)
        if pin is None:
            problems.append(f"{requirement} is not in the lock")
        elif not requirement.specifier.contains(pin.version, prereleases=True):
            problems.append(f"{requirement}: the lock pins {pin.version}")
    for locked, pin in pins.items():
        if not pin.hashes:
            problems.append(f"{locked}=={pin.version} has no hash")
        if VIA_PYPROJECT in pin.via and locked not in wanted:
            problems.append(f"{locked} is locked for pyproject.toml, which no longer asks for it")
    return problems


def test_the_runtime_lock_agrees_with_pyproject() -> None:
    pins = read_lock(ROOT / "requirements.lock")
    requirements = PYPROJECT["project"]["dependencies"]
    assert lock_problems(requirements, pins) == [], "run scripts/lock"
    assert len(pins) > len(requirements)  # transitive pins too


def test_the_build_lock_agrees_with_pyproject() -> None:
    pins = read_lock(ROOT / "requirements-build.lock")
    assert lock_problems(PYPROJECT["build-system"]["requires"], pins) == [], "run scripts/lock"


def test_the_lock_check_finds_disagreements() -> None:
    pins = read_lock(ROOT / "requirements.lock")
    requirements = list(PYPROJECT["project"]["dependencies"])
    celery = next(r for r in requirements if r.startswith("celery"))
    requirements.remove(celery)
    assert lock_problems([*requirements, "celery[redis]>=5.8", "django>=5"], pins) == [
        "celery[redis]>=5.8: the lock pins 5.7.0",
        "django>=5 is not in the lock",
    ]
    dropped = [r for r in requirements if not r.startswith("defusedxml")]
    assert lock_problems([*dropped, celery], pins) == [
        "defusedxml is locked for pyproject.toml, which no longer asks for it"
    ]


@pytest.mark.parametrize("package", PRIVATE_API_PACKAGES)
def test_packages_whose_private_methods_are_overridden_are_held_to_a_minor(package: str) -> None:
    requirement = next(
        Requirement(r)
        for r in PYPROJECT["project"]["dependencies"]
        if canonicalize_name(Requirement(r).name) == package
    )
    lower = next(s for s in requirement.specifier if s.operator == ">=")
    upper = next(s for s in requirement.specifier if s.operator == "<")
    low, high = Version(lower.version), Version(upper.version)
    assert (high.major, high.minor) == (low.major, low.minor + 1), requirement
    # What is installed here (and tested) is in that range, and so is what the image gets.
    assert requirement.specifier.contains(metadata.version(package))
    assert requirement.specifier.contains(read_lock(ROOT / "requirements.lock")[package].version)


def test_version_option_prints_the_installed_version() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "trustcard", "--version"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"trustcard {PYPROJECT['project']['version']}\n"
    assert metadata.version("trustcard") == PYPROJECT["project"]["version"]


def test_license_and_changelog() -> None:
    license_text = (ROOT / "LICENSE").read_text()
    assert PYPROJECT["project"]["license"] == "Apache-2.0"
    assert "Apache License" in license_text
    assert "Version 2.0, January 2004" in license_text
    assert "END OF TERMS AND CONDITIONS" in license_text
    changelog = (ROOT / "CHANGELOG.md").read_text()
    assert changelog.startswith("# Changelog")
    assert "## [Unreleased]" in changelog
    assert f"## [{PYPROJECT['project']['version']}]" in changelog
