"""`trustcard db` and `trustcard claims` as real commands against SQLite and PostgreSQL."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

from tests.stack import trustcard_cmd


def _run(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        trustcard_cmd(*args),
        env={**os.environ, "DATABASE_URL": url},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_migrate_check_and_import_claims(database_url: str, tmp_path: Path) -> None:
    check = _run(database_url, "db", "check")
    assert check.returncode == 1
    assert check.stderr.strip().endswith("run `trustcard db upgrade`")
    assert len(check.stderr.strip().splitlines()) == 1
    # API and worker refuse to start on it, with the same single line.
    for command in ("api", "worker"):
        refused = _run(database_url, command)
        assert refused.returncode == 1
        assert refused.stderr.strip() == check.stderr.strip()

    upgraded = _run(database_url, "db", "upgrade")
    assert upgraded.returncode == 0, upgraded.stderr
    assert _run(database_url, "db", "check").returncode == 0
    assert _run(database_url, "db", "current").stdout.strip() == "0002"

    claims_json = tmp_path / "claims.json"
    claims_json.write_text(
        json.dumps([{"text": "Vaccines contain microchips", "verdict": "false", "sources": []}])
    )
    claims_csv = tmp_path / "claims.csv"
    claims_csv.write_text(
        "text,verdict,sources\n"
        '"Vaccines contain microchips",disputed,https://f.example/1\n'
        '"The moon landing was faked",False,https://a.example | https://b.example\n'
    )
    first = _run(database_url, "claims", "import", str(claims_json))
    assert first.stdout.strip() == f"claims: 1 added, 0 updated, from {claims_json}"
    second = _run(database_url, "claims", "import", str(claims_csv))
    assert second.stdout.strip() == f"claims: 1 added, 1 updated, from {claims_csv}"
    listed = _run(database_url, "claims", "list").stdout.splitlines()
    assert listed == [
        "1\tdisputed\tVaccines contain microchips\thttps://f.example/1",
        "2\tfalse\tThe moon landing was faked\thttps://a.example https://b.example",
    ]

    downgraded = _run(database_url, "db", "downgrade", "base")
    assert downgraded.stdout.strip() == "database schema is now at base"
    assert _run(database_url, "db", "check").returncode == 1


def test_bad_claims_file_names_the_entry(tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("text,verdict\nfine,false\nwrong,true\n")
    result = _run(f"sqlite:///{tmp_path / 'db.sqlite'}", "claims", "import", str(bad))
    assert result.returncode == 2
    assert result.stderr.strip() == (
        f"trustcard: {bad}: entry 3: verdict 'true' is not one of false, disputed, misleading"
    )


def test_unreachable_database_is_one_line() -> None:
    result = _run("postgresql://postgres@127.0.0.1:1/nothing", "db", "check")
    assert result.returncode == 1
    line = result.stderr.strip()
    assert line.startswith(
        "trustcard: database postgresql://postgres@127.0.0.1:1/nothing unavailable"
    )
    assert len(line.splitlines()) == 1
