"""run_pipeline on supplied content: stages in order, progress, skipped and failed stages."""

from __future__ import annotations

import base64
import json
import time
from importlib.metadata import EntryPoint

import pytest
from pydantic import ValidationError

from tests.unit.analysis.images import SD_PARAMETERS, clean_jpeg, png_with_text
from trustcard.analysis.claims import Claim
from trustcard.analysis.content import InvalidPostUrl
from trustcard.analysis.pipeline import PipelineConfig, StageProgress, run_pipeline
from trustcard.analysis.signals import Signal
from trustcard.analysis.supplied import SuppliedContent
from trustcard.config import Settings

URL = "https://www.instagram.com/p/CxYz123AbCd/"
CLAIMS = [
    Claim(1, "Vaccines contain microchips", "false", ["https://factcheck.example/microchips"]),
    Claim(2, "The moon landing was faked", "false", []),
]


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _supplied(caption: str, *images: bytes) -> SuppliedContent:
    return SuppliedContent.model_validate(
        {"caption": caption, "media": [{"data_base64": _b64(i)} for i in images]}
    )


def test_generated_image_and_false_claim_make_an_untrustworthy_post() -> None:
    progress: list[StageProgress] = []
    supplied = _supplied(
        "BREAKING: the covid vaccine contains a microchip! #wakeup @someone",
        png_with_text(parameters=SD_PARAMETERS),
    )
    result = run_pipeline(
        URL, supplied, claims=CLAIMS, config=PipelineConfig(), on_stage=progress.append
    )

    names = ["extract", "ai_generated", "deepfake", "fact_check", "trust_score"]
    assert [stage.name for stage in result.stages] == names
    assert [p.stage for p in progress] == names
    assert [p.percent for p in progress] == [0, 16, 33, 50, 66]
    assert result.store_progress() == StageProgress("store", 5, 6, 83)
    statuses = {stage.name: stage.status for stage in result.stages}
    assert statuses == {
        "extract": "ok",
        "ai_generated": "ok",
        "deepfake": "unavailable",
        "fact_check": "ok",
        "trust_score": "ok",
    }
    assert result.content["source"] == "supplied"
    assert result.content["hashtags"] == ["wakeup"]
    assert result.content["mentions"] == ["someone"]
    assert result.content["media"][0]["bytes"] > 0
    assert result.trust.label == "untrustworthy"
    assert result.trust.score is not None
    assert result.trust.score < 40
    assert result.trust.missing_signals == ["deepfake"]
    fact = result.stages[3].signal
    assert fact is not None
    assert fact["data"]["matches"][0]["claim_id"] == 1
    # The whole result survives a JSON round trip (it is stored as JSON).
    assert json.loads(json.dumps(result.as_dict()))["trust"]["label"] == "untrustworthy"


def test_clean_photo_and_harmless_caption_are_not_vouched_for_with_little_evidence() -> None:
    supplied = _supplied("Sunset at the lake with friends", clean_jpeg())
    result = run_pipeline(URL, supplied, claims=CLAIMS, config=PipelineConfig())

    assert result.trust.score is not None
    assert result.trust.score >= 70
    # No metadata and no claim match say little: too little to call the post trustworthy.
    assert result.trust.label == "unknown"
    assert result.trust.confidence < 0.25


def test_disabled_analyzers_are_listed_as_skipped_and_not_expected() -> None:
    config = PipelineConfig(enabled=frozenset({"fact_check"}))
    result = run_pipeline(URL, _supplied("moon landing was faked"), claims=CLAIMS, config=config)

    statuses = [(stage.name, stage.status) for stage in result.stages]
    assert statuses == [
        ("extract", "ok"),
        ("ai_generated", "skipped"),
        ("deepfake", "skipped"),
        ("fact_check", "ok"),
        ("trust_score", "ok"),
    ]
    assert result.trust.missing_signals == []
    assert result.trust.label == "untrustworthy"


class _Sleeper:
    name = "sleeper"
    version = "1"

    def analyze(self, content: object) -> object:
        time.sleep(2)
        raise AssertionError("should have been abandoned")


def test_a_timed_out_plugin_is_recorded_and_the_rest_go_on() -> None:
    plugin = EntryPoint("sleeper", f"{__name__}:_Sleeper", "trustcard.analyzers")
    config = PipelineConfig(analyzer_timeout_seconds=0.3, plugins=[plugin])
    started = time.monotonic()
    result = run_pipeline(URL, _supplied("hello"), claims=CLAIMS, config=config)

    assert time.monotonic() - started < 1.5
    names = [stage.name for stage in result.stages]
    assert names == ["extract", "ai_generated", "deepfake", "fact_check", "sleeper", "trust_score"]
    sleeper = result.stages[4]
    assert sleeper.status == "timeout"
    assert "0.3 s" in sleeper.detail
    assert "sleeper" in result.trust.missing_signals
    assert result.store_progress().total_stages == 7


def test_unknown_enabled_analyzer_fails_its_stage_only() -> None:
    config = PipelineConfig(enabled=frozenset({"fact_check", "nonexistent"}), plugins=[])
    result = run_pipeline(URL, _supplied("moon landing was faked"), claims=CLAIMS, config=config)

    unknown = next(stage for stage in result.stages if stage.name == "nonexistent")
    assert unknown.status == "failed"
    assert "no such analyzer is installed" in unknown.detail
    assert result.trust.label == "untrustworthy"


def test_invalid_url_is_refused_before_any_work() -> None:
    progress: list[StageProgress] = []
    with pytest.raises(InvalidPostUrl, match=r"not an instagram\.com URL"):
        run_pipeline(
            "https://example.com/p/abcdef/",
            None,
            claims=[],
            config=PipelineConfig(),
            on_stage=progress.append,
        )
    assert progress == []


def test_config_from_settings() -> None:
    settings = Settings(
        ANALYZERS_ENABLED="ai_generated, fact_check",
        ANALYZER_TIMEOUT_SECONDS=5,
        POST_FETCH_BASE_URL="http://127.0.0.1:8080/",
    )
    config = PipelineConfig.from_settings(settings)

    assert config.enabled == frozenset({"ai_generated", "fact_check"})
    assert config.analyzer_timeout_seconds == 5
    assert config.post_base_url == "http://127.0.0.1:8080"
    assert config.fetch_limits().trusted_hosts == frozenset({"127.0.0.1:8080"})
    assert PipelineConfig.from_settings(Settings()).enabled is None


class _BytesInData:
    name = "odd"
    version = "1"

    def analyze(self, content: object) -> Signal:
        return Signal(self.name, 0.5, 0.5, data={"raw": b"\x00"})


class _Raises:
    name = "raises"
    version = "1"

    def analyze(self, content: object) -> Signal:
        raise RuntimeError("model file missing")


def test_failing_and_unstorable_plugins_are_recorded_as_failed() -> None:
    plugins = [
        EntryPoint("odd", f"{__name__}:_BytesInData", "trustcard.analyzers"),
        EntryPoint("raises", f"{__name__}:_Raises", "trustcard.analyzers"),
    ]
    result = run_pipeline(
        URL,
        _supplied("moon landing was faked"),
        claims=CLAIMS,
        config=PipelineConfig(plugins=plugins),
    )

    stages = {stage.name: stage for stage in result.stages}
    assert stages["odd"].status == "failed"
    assert "not JSON-serialisable" in stages["odd"].detail
    assert stages["raises"].status == "failed"
    assert stages["raises"].detail == "RuntimeError: model file missing"
    assert stages["fact_check"].status == "ok"
    assert result.trust.missing_signals == ["ai_generated", "deepfake", "odd", "raises"]
    json.dumps(result.as_dict(), allow_nan=False)


def test_a_post_base_url_that_is_not_http_is_a_configuration_error() -> None:
    with pytest.raises(ValidationError, match="must be an http"):
        Settings(POST_FETCH_BASE_URL="ftp://mirror.example")
