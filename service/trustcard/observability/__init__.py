"""Metrics, traces and logs shared by the API, the worker and the exporter."""

from prometheus_client import disable_created_metrics

# `*_created` samples double the series count and no dashboard or alert reads them.
disable_created_metrics()  # type: ignore[no-untyped-call]
