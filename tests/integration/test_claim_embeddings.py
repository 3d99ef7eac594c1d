"""claim_similarity with the real model, in a real prefork worker (needs the `embeddings` extra).

The model must load in the pool children, after the fork: never in the worker's main process
(nor the API's), which would copy ~600 MiB into every child and load torch where no analysis runs.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest

from tests.integration.test_analysis_api import new_shortcode, post_url, stage, submit
from tests.integration.test_analysis_api import wait_for_analysis as wait
from tests.stack import ServiceStack

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

CLAIM = "5G towers spread the coronavirus"
PARAPHRASE = "The new mobile masts are what is making people sick with covid"
UNRELATED = "Our cat turned three today"
LOADED = re.compile(r"claim_similarity: loaded all-MiniLM-L6-v2 in [\d.]+ s in process (\d+) \(RSS")
MIB = 2**20


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceStack]:
    workdir = Path(tmp_path_factory.mktemp("claim-embeddings"))
    stack = ServiceStack(
        workdir=workdir,
        env_overrides={
            "ANALYZERS_ENABLED": "fact_check,claim_similarity",
            "CLAIM_EMBEDDINGS_CACHE_DIR": str(workdir / "vectors"),
            # The first analysis in a child loads the model and embeds the table.
            "ANALYZER_TIMEOUT_SECONDS": "120",
        },
    )
    try:
        stack.start()
        yield stack
    finally:
        stack.stop()


@pytest.fixture(scope="module")
def api(stack: ServiceStack) -> Iterator[httpx.Client]:
    with stack.client() as http:
        added = http.post("/claims", json={"text": CLAIM, "verdict": "false", "sources": []})
        assert added.status_code == 201, added.text
        yield http


def analyse(api: httpx.Client, caption: str) -> dict[str, object]:
    submitted = submit(api, post_url(new_shortcode()), content={"caption": caption, "media": []})
    done = wait(api, submitted["analysis_id"], {"completed", "failed"})
    assert done["status"] == "completed", done
    return done


def test_a_paraphrase_the_lexical_matcher_misses_is_matched(api: httpx.Client) -> None:
    done = analyse(api, PARAPHRASE)

    assert stage(done, "fact_check")["signal"]["data"]["matches"] == []
    similarity = stage(done, "claim_similarity")
    assert similarity["status"] == "ok", similarity
    [match] = similarity["signal"]["data"]["matches"]
    assert (match["claim"], match["verdict"]) == (CLAIM, "false")
    assert match["similarity"] >= similarity["signal"]["data"]["threshold"]
    assert similarity["signal"]["score"] >= 0.5


def test_an_unrelated_caption_is_not_matched(api: httpx.Client) -> None:
    similarity = stage(analyse(api, UNRELATED), "claim_similarity")

    assert similarity["status"] == "ok", similarity
    assert (similarity["signal"]["score"], similarity["signal"]["data"]["matches"]) == (0.0, [])


def test_the_model_loads_in_the_pool_child_not_the_main_process(
    api: httpx.Client, stack: ServiceStack
) -> None:
    analyse(api, PARAPHRASE)  # at least one child has run an analysis
    assert stack.worker is not None
    assert stack.worker.process is not None
    main = psutil.Process(stack.worker.process.pid)
    children = {child.pid: child for child in main.children()}

    loaded_in = {int(pid) for pid in LOADED.findall(stack.worker.log())}
    assert loaded_in, stack.worker.log()[-3000:]
    assert main.pid not in loaded_in
    assert loaded_in <= children.keys(), (loaded_in, children)
    # torch's library is mapped in a child that loaded the model, and not in the main process.
    assert not _maps_torch(main.pid)
    for pid in loaded_in:
        assert _maps_torch(pid)
        assert children[pid].memory_info().rss > main.memory_info().rss + 200 * MIB
    assert main.memory_info().rss < 400 * MIB
    assert "claim_similarity" not in (stack.api.log() if stack.api else "")


def _maps_torch(pid: int) -> bool:
    with open(f"/proc/{pid}/maps") as maps:
        return any("libtorch" in line for line in maps)


def test_the_api_process_has_no_torch(stack: ServiceStack) -> None:
    assert stack.api is not None
    assert stack.api.process is not None
    api_processes = [psutil.Process(stack.api.process.pid)]
    api_processes += api_processes[0].children(recursive=True)
    assert not any(_maps_torch(p.pid) for p in api_processes)
    assert os.getpid() not in {p.pid for p in api_processes}
