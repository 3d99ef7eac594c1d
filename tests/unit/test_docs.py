"""The README stays a ten-minute read whose links work; the docs site builds strictly.

`mkdocs build --strict` fails on a nav entry without a page, a page left out of the nav, a link
to a missing page and a link to a missing anchor. The other checks tie the docs to the code:
every alert of the chart's PrometheusRule has its runbook entry (the anchor `runbook_url`
points at), every setting is documented, every file the pages name exists.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import unicodedata
from pathlib import Path

import pytest

from trustcard.config import Settings

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
DOCS = ROOT / "docs"
README_MAX_LINES = 220

# [text](target) outside code; images too. Targets with a scheme are not checked (no network).
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^(```|~~~).*?^\1", re.S | re.M)
INLINE_CODE = re.compile(r"`[^`\n]*`")
# Repository paths written as code: `service/...`, `tests/...`, `charts/...`, ...
NAMED_PATH = re.compile(
    r"`((?:service|tests|scripts|charts|k8s|bench|docs)/[\w./-]+|trustcard/[\w/]+\.py)`"
)
PROMETHEUS_RULE = ROOT / "charts/trustcard/templates/monitoring/prometheusrule.yaml"


def prose(markdown: str) -> str:
    """The text outside fenced blocks and inline code, where links are links."""
    return INLINE_CODE.sub("", FENCE.sub("", markdown))


def github_anchor(heading: str) -> str:
    """The id GitHub gives a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[`*_]|\[([^\]]*)\]\([^)]*\)", r"\1", heading.strip()).lower()
    kept = "".join(c for c in text if c in " -_" or unicodedata.category(c)[0] in "LN")
    return kept.replace(" ", "-")


def anchors_of(markdown_file: Path) -> set[str]:
    headings = re.findall(r"^#{1,6} +(.+?) *$", FENCE.sub("", markdown_file.read_text()), re.M)
    return {github_anchor(h) for h in headings}


def broken_links(markdown_file: Path) -> list[str]:
    problems = []
    for target in LINK.findall(prose(markdown_file.read_text())):
        if re.match(r"[a-z][a-z0-9+.-]*:", target):
            continue
        path_part, _, anchor = target.partition("#")
        resolved = (markdown_file.parent / path_part).resolve() if path_part else markdown_file
        if not resolved.exists():
            problems.append(f"{target}: no such file")
        elif anchor and resolved.suffix == ".md" and anchor not in anchors_of(resolved):
            problems.append(f"{target}: no heading with anchor #{anchor} in {resolved.name}")
    return problems


def test_readme_is_a_short_read() -> None:
    lines = README.read_text().count("\n")
    assert lines <= README_MAX_LINES, f"README.md has {lines} lines; move detail to docs/"


def test_readme_relative_links_resolve() -> None:
    assert LINK.findall(prose(README.read_text())), "the link pattern found no link at all"
    assert broken_links(README) == []


def test_link_checker_catches_a_broken_link(tmp_path: Path) -> None:
    (tmp_path / "other.md").write_text("# A heading\n")
    page = tmp_path / "page.md"
    page.write_text(
        "[ok](other.md#a-heading) [gone](missing.md) [bad](other.md#nope) `[code](x.md)`\n"
    )
    assert broken_links(page) == [
        "missing.md: no such file",
        "other.md#nope: no heading with anchor #nope in other.md",
    ]


# The curl commands of the service's original guide, which the README's walk-through runs as is.
GUIDE_COMMANDS = (
    'curl -X POST "http://localhost:8000/tasks/test/add?x=5&y=3"',
    'curl -X POST "http://localhost:8000/tasks/test/long"',
    "curl http://localhost:8000/tasks/",
    "curl http://localhost:8000/tasks/abc-123",
    "curl http://localhost:8000/health",
)


def test_readme_walk_through_keeps_the_guide_commands() -> None:
    readme = README.read_text()
    assert [c for c in GUIDE_COMMANDS if f"$ {c}" not in readme] == []


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The site, built once with --strict (warnings are errors)."""
    out = tmp_path_factory.mktemp("site")
    build = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
        timeout=240,
    )
    assert build.returncode == 0, build.stdout + build.stderr
    return out


def test_docs_site_builds_strictly(site: Path) -> None:
    for page in DOCS.glob("*.md"):
        built = site / ("index.html" if page.stem == "index" else f"{page.stem}/index.html")
        assert built.is_file(), f"{page.name} was not built"


def test_architecture_diagram_is_a_mermaid_block(site: Path) -> None:
    html = (site / "architecture" / "index.html").read_text()
    block = re.search(r'<pre class="mermaid"><code>(.*?)</code></pre>', html, re.S)
    assert block, "superfences did not turn the mermaid fence into a diagram block"
    assert block.group(1).lstrip().startswith("flowchart")


def test_every_alert_has_a_runbook_entry(site: Path) -> None:
    """runbook_url is <runbookBaseUrl>#<alert name in lower case>: that anchor must exist."""
    alerts = re.findall(r"^\s*- alert: (\w+)", PROMETHEUS_RULE.read_text(), re.M)
    assert len(alerts) >= 8
    html = (site / "operations" / "index.html").read_text()
    missing = [a for a in alerts if f'id="{a.lower()}"' not in html]
    assert missing == []


def test_every_setting_is_documented() -> None:
    pages = "\n".join(p.read_text() for p in DOCS.glob("*.md"))
    missing = [name for name in Settings.model_fields if f"`{name}`" not in pages]
    assert missing == []


def test_files_the_docs_name_exist() -> None:
    named = {
        (name, path)
        for name in ("README.md", *(f"docs/{page.name}" for page in DOCS.glob("*.md")))
        for path in NAMED_PATH.findall((ROOT / name).read_text())
    }
    assert len(named) > 50, "the path pattern stopped matching"
    missing = [
        f"{name}: {path}"
        for name, path in sorted(named)
        if not (ROOT / path).exists() and not (ROOT / "service" / path).exists()
    ]
    assert missing == []
