"""Analyzer plug-ins discovered through real importlib.metadata entry points."""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path

import pytest

from tests.plugins import EXAMPLE_MODULE, GROUP, install_example_plugin
from trustcard.analysis.content import PostContent
from trustcard.analysis.pipeline import PipelineConfig, run_pipeline
from trustcard.analysis.signals import Signal
from trustcard.analysis.supplied import SuppliedContent

URL = "https://www.instagram.com/p/CxYz123AbCd/"
SHOUTED = SuppliedContent(caption="THEY DON'T WANT YOU TO KNOW THIS!!! share now")


@pytest.fixture
def plugin_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A site directory on sys.path that the test fills with plug-ins."""
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path
    sys.modules.pop(EXAMPLE_MODULE, None)
    importlib.invalidate_caches()


def test_example_plugin_is_discovered_and_runs_as_its_own_stage(plugin_path: Path) -> None:
    install_example_plugin(plugin_path)
    importlib.invalidate_caches()
    assert "shouting" in entry_points(group=GROUP).names

    result = run_pipeline(URL, SHOUTED, claims=[], config=PipelineConfig())

    names = [stage.name for stage in result.stages]
    assert names == ["extract", "ai_generated", "deepfake", "fact_check", "shouting", "trust_score"]
    shouting = result.stages[4]
    assert shouting.status == "ok"
    assert shouting.signal is not None
    # 25 of 33 letters are capitals, 3 exclamation marks: 0.758 + 3 * 0.05.
    assert shouting.signal["score"] == 0.908
    assert shouting.signal["version"] == "0.1.0"
    assert shouting.signal["evidence"] == ["76% of letters in capitals, 3 exclamation marks"]
    assert any(line.startswith("shouting: risk 0.18") for line in result.trust.explanation)


def test_broken_plugins_fail_their_stage_and_the_rest_go_on(plugin_path: Path) -> None:
    install_example_plugin(
        plugin_path,
        {
            "broken": f"{EXAMPLE_MODULE}:DoesNotExist",
            "misnamed": f"{EXAMPLE_MODULE}:ShoutingCaption",
            "unimportable": "no_such_module_anywhere:Analyzer",
        },
    )
    importlib.invalidate_caches()

    result = run_pipeline(URL, SHOUTED, claims=[], config=PipelineConfig())

    stages = {stage.name: stage for stage in result.stages}
    assert stages["broken"].status == "failed"
    assert "plug-in failed to load: AttributeError" in stages["broken"].detail
    assert stages["unimportable"].status == "failed"
    assert "ModuleNotFoundError" in stages["unimportable"].detail
    assert stages["misnamed"].status == "failed"
    assert "provides an analyzer named 'shouting'" in stages["misnamed"].detail
    assert stages["shouting"].status == "ok"
    assert stages["ai_generated"].status == "unavailable"  # no media: not a plug-in problem
    assert {"broken", "misnamed", "unimportable"} <= set(result.trust.missing_signals)


def test_disabled_plugins_are_not_even_loaded(plugin_path: Path) -> None:
    install_example_plugin(plugin_path, {"broken": "no_such_module_anywhere:Analyzer"})
    importlib.invalidate_caches()
    config = PipelineConfig(enabled=frozenset({"fact_check"}))

    result = run_pipeline(URL, SHOUTED, claims=[], config=config)

    assert [stage.name for stage in result.stages if stage.status != "skipped"] == [
        "extract",
        "fact_check",
        "trust_score",
    ]
    assert EXAMPLE_MODULE not in sys.modules


class CaptionLengthDeepfake:
    """Stands in for a deepfake model in the override test: a deterministic, trivial 'model'."""

    name = "deepfake"
    version = "test-model"

    def analyze(self, content: PostContent) -> Signal:
        return Signal(self.name, 0.0, 0.5, [f"{len(content.media)} media checked"])


def test_a_plugin_with_a_builtin_name_replaces_the_builtin() -> None:
    plugin = EntryPoint("deepfake", f"{__name__}:CaptionLengthDeepfake", GROUP)
    result = run_pipeline(URL, SHOUTED, claims=[], config=PipelineConfig(plugins=[plugin]))

    deepfake = result.stages[2]
    assert deepfake.name == "deepfake"
    assert deepfake.status == "ok"
    assert deepfake.signal is not None
    assert deepfake.signal["version"] == "test-model"
    assert "deepfake" not in result.trust.missing_signals


def test_a_fresh_interpreter_finds_the_plugin_through_pythonpath(tmp_path: Path) -> None:
    site = install_example_plugin(tmp_path / "site")
    script = (
        "import json\n"
        "from trustcard.analysis.pipeline import PipelineConfig, run_pipeline\n"
        "from trustcard.analysis.supplied import SuppliedContent\n"
        f"r = run_pipeline({URL!r}, SuppliedContent(caption={SHOUTED.caption!r}), claims=[],"
        " config=PipelineConfig())\n"
        "print(json.dumps([[s.name, s.status] for s in r.stages]))\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), os.getcwd()])}

    done = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60
    )

    assert done.returncode == 0, done.stderr
    assert ["shouting", "ok"] in json.loads(done.stdout)


class CountingAnalyzer:
    instances = 0

    name = "counting"
    version = "1"

    def __init__(self) -> None:
        CountingAnalyzer.instances += 1

    def analyze(self, content: PostContent) -> Signal:
        return Signal(self.name, 0.0, 0.1)


def test_a_plugin_is_instantiated_once_per_process() -> None:
    plugin = EntryPoint("counting", f"{__name__}:CountingAnalyzer", GROUP)
    config = PipelineConfig(plugins=[plugin])

    for _ in range(3):
        run_pipeline(URL, SHOUTED, claims=[], config=config)

    assert CountingAnalyzer.instances == 1
