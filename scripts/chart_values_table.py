"""Print the chart values table built from values.schema.json (--write: into the chart README)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

CHART = Path(__file__).resolve().parents[1] / "charts" / "trustcard"
BEGIN, END = "<!-- values-table:begin -->", "<!-- values-table:end -->"


def rows(schema: dict[str, Any], path: str = "") -> list[str]:
    properties = schema.get("properties")
    if properties and schema.get("type") == "object":
        lines = []
        for key, child in properties.items():
            lines += rows(child, f"{path}.{key}" if path else key)
        return lines
    default = json.dumps(schema.get("default"))
    kind = schema.get("type")
    kind = "/".join(kind) if isinstance(kind, list) else kind
    description = schema.get("description", "").replace("|", "\\|")
    return [f"| `{path}` | {kind} | `{default}` | {description} |"]


def table() -> str:
    schema = json.loads((CHART / "values.schema.json").read_text())
    header = ["| Key | Type | Default | Description |", "|---|---|---|---|"]
    return "\n".join(header + rows(schema))


def with_table(readme: str) -> str:
    head, _, rest = readme.partition(BEGIN)
    _, _, tail = rest.partition(END)
    return f"{head}{BEGIN}\n{table()}\n{END}{tail}"


if __name__ == "__main__":
    readme_path = CHART / "README.md"
    if "--write" in sys.argv:
        readme_path.write_text(with_table(readme_path.read_text()))
    else:
        print(table())
