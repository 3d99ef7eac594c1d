"""The dashboard script's verdict: which panel queries came back empty."""

from __future__ import annotations

from bench.dashboard import Series, TargetResult, panels_without_data


def _target(ref_id: str, expr: str, rows: int, external: bool = False) -> TargetResult:
    series = [Series({"n": str(i)}, [(0.0, 1.0)]) for i in range(rows)]
    return TargetResult(ref_id, expr, "", series, external)


def test_an_empty_query_is_named_and_kube_state_metrics_is_left_aside() -> None:
    results = {
        1: [_target("A", "up", 2)],
        2: [_target("A", "trustcard_x_total", 1), _target("B", "trustcard_missing", 0)],
        3: [_target("A", "kube_deployment_status_replicas", 0, external=True)],
    }
    titles = {1: "Up", 2: "Two queries", 3: "Replicas"}
    assert panels_without_data(results, titles) == [
        "panel 2 'Two queries' B: no data for 'trustcard_missing'"
    ]


def test_every_query_with_data_passes() -> None:
    assert panels_without_data({1: [_target("A", "up", 1)]}, {1: "Up"}) == []
