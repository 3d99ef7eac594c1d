"""Analyzer plug-ins for tests, made importable and discoverable without pip.

install_example_plugin() lays out what `pip install tests/plugins/example_analyzer` would: the
module and a .dist-info with the entry points, in a directory that goes on sys.path (or on a
worker's PYTHONPATH). importlib.metadata then finds the plug-in exactly as it finds an
installed one.
"""

from __future__ import annotations

import shutil
import tomllib
from pathlib import Path

EXAMPLE_DIR = Path(__file__).parent / "example_analyzer"
EXAMPLE_MODULE = "trustcard_example_analyzer"
GROUP = "trustcard.analyzers"


def install_example_plugin(target: Path, extra_entry_points: dict[str, str] | None = None) -> Path:
    """Put the example plug-in into `target` (with any extra entry points); returns `target`."""
    project = tomllib.loads((EXAMPLE_DIR / "pyproject.toml").read_text())["project"]
    entry_points = {**project["entry-points"][GROUP], **(extra_entry_points or {})}
    shutil.copytree(EXAMPLE_DIR / EXAMPLE_MODULE, target / EXAMPLE_MODULE, dirs_exist_ok=True)
    dist_name = project["name"].replace("-", "_")
    dist_info = target / f"{dist_name}-{project['version']}.dist-info"
    dist_info.mkdir(parents=True, exist_ok=True)
    (dist_info / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: {project['name']}\nVersion: {project['version']}\n"
    )
    lines = [f"[{GROUP}]", *(f"{name} = {value}" for name, value in entry_points.items())]
    (dist_info / "entry_points.txt").write_text("\n".join(lines) + "\n")
    return target
