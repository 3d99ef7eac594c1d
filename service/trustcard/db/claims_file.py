"""Read claims to import from JSON (a list of objects) or CSV (columns text, verdict, sources)."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path
from typing import Any

from trustcard.db.repository import ClaimInput

# Several sources in one CSV cell: separated by whitespace, "|" or ";".
_SOURCE_SEPARATOR = re.compile(r"[\s|;]+")


class ClaimsFileError(ValueError):
    """The file cannot be imported; the message names the file and the bad entry."""


def read_claims_file(path: Path) -> list[ClaimInput]:
    try:
        text = path.read_text(encoding="utf-8-sig")
    except OSError as exc:
        raise ClaimsFileError(f"{path}: {exc.strerror or exc}") from None
    suffix = path.suffix.lower()
    if suffix == ".json":
        entries = _json_entries(path, text)
    elif suffix == ".csv":
        entries = _csv_entries(path, text)
    else:
        raise ClaimsFileError(f"{path}: expected a .json or .csv file")
    claims = []
    for number, entry in entries:
        try:
            claims.append(_claim(entry))
        except (ValueError, TypeError) as exc:
            raise ClaimsFileError(f"{path}: entry {number}: {exc}") from None
    return claims


def _json_entries(path: Path, text: str) -> list[tuple[int, dict[str, Any]]]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ClaimsFileError(f"{path}: not valid JSON ({exc})") from None
    if isinstance(data, dict) and "claims" in data:
        data = data["claims"]
    if not isinstance(data, list) or not all(isinstance(item, dict) for item in data):
        raise ClaimsFileError(f"{path}: expected a JSON list of objects with text and verdict")
    return list(enumerate(data, start=1))


def _csv_entries(path: Path, text: str) -> list[tuple[int, dict[str, Any]]]:
    reader = csv.DictReader(text.splitlines())
    missing = {"text", "verdict"} - set(reader.fieldnames or [])
    if missing:
        raise ClaimsFileError(f"{path}: CSV header lacks {', '.join(sorted(missing))}")
    entries = []
    for row in reader:
        sources = [s for s in _SOURCE_SEPARATOR.split(row.get("sources") or "") if s]
        entries.append((reader.line_num, {**row, "sources": sources}))
    return entries


def _claim(entry: dict[str, Any]) -> ClaimInput:
    text, verdict, sources = entry.get("text"), entry.get("verdict"), entry.get("sources", [])
    if not isinstance(text, str) or not isinstance(verdict, str):
        raise TypeError("text and verdict must be strings")
    if not isinstance(sources, list) or not all(isinstance(s, str) for s in sources):
        raise TypeError("sources must be a list of strings")
    return ClaimInput(text=text, verdict=verdict.strip().lower(), sources=sources)
