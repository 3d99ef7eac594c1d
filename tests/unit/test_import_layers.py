"""Imports flow one way: the import-linter contracts in pyproject.toml hold, and cover every place.

The layers (highest first): cli; api | local | flower_ui | smoke; tasks; celery_app; worker;
task_model; observability; analysis | db | redis_clients; config. A module may import only from
layers below its own, and `|` siblings not from each other, directly or through other modules.
"""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import trustcard

ROOT = Path(__file__).resolve().parents[2]
PYPROJECT = ROOT / "pyproject.toml"
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"


def lint_imports(config: Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(LINT_IMPORTS), "--config", str(config), "--no-cache"],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def layered_modules() -> set[str]:
    config = tomllib.loads(PYPROJECT.read_text())["tool"]["importlinter"]
    (layers,) = [c for c in config["contracts"] if c["type"] == "layers"]
    return {name.strip() for layer in layers["layers"] for name in layer.split("|")}


def test_the_contracts_hold(tmp_path: Path) -> None:
    done = lint_imports(PYPROJECT, tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "2 kept, 0 broken" in done.stdout, done.stdout


def test_every_place_is_in_a_layer() -> None:
    # A new top-level module or package left out of the layers would escape the contract.
    package = Path(trustcard.__file__).parent
    places = {
        f"trustcard.{path.stem}"
        for path in package.iterdir()
        if (path.suffix == ".py" or (path / "__init__.py").exists())
        and path.stem not in ("__init__", "__main__")
    }
    assert places == layered_modules()


def test_an_import_against_the_layers_breaks_the_contract(tmp_path: Path) -> None:
    # The checker sees indirect chains: the API reaches worker.signals through celery_app, so
    # a contract calling the two independent (an easy first guess) is broken, naming the chain.
    config = tmp_path / "independent.toml"
    config.write_text(
        '[tool.importlinter]\nroot_package = "trustcard"\n\n'
        "[[tool.importlinter.contracts]]\n"
        'name = "api and worker independent"\ntype = "layers"\n'
        'layers = ["trustcard.api | trustcard.worker"]\n'
    )
    done = lint_imports(config, tmp_path)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "0 kept, 1 broken" in done.stdout, done.stdout
    assert "trustcard.api.main -> trustcard.celery_app" in done.stdout, done.stdout
    assert "trustcard.celery_app -> trustcard.worker." in done.stdout, done.stdout
