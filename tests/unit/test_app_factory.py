"""The app factory: routes present per settings, OpenAPI document complete."""

from __future__ import annotations

from trustcard.api.main import create_app
from trustcard.config import Settings


def _paths(enable_test_endpoints: bool) -> set[str]:
    app = create_app(Settings(ENABLE_TEST_ENDPOINTS=enable_test_endpoints))
    return set(app.openapi()["paths"])


def test_test_endpoints_follow_the_switch() -> None:
    test_paths = {"/tasks/test/add", "/tasks/test/sleep", "/tasks/test/long", "/tasks/test/fail"}
    assert test_paths <= _paths(True)
    assert not test_paths & _paths(False)


def test_core_endpoints_always_present() -> None:
    paths = _paths(False)
    assert {"/tasks/", "/tasks/{task_id}", "/health", "/health/live", "/health/ready"} <= paths


def test_openapi_documents_errors() -> None:
    spec = create_app(Settings()).openapi()
    get_task = spec["paths"]["/tasks/{task_id}"]["get"]["responses"]
    assert {"200", "404", "422", "503"} <= set(get_task)
    delete_task = spec["paths"]["/tasks/{task_id}"]["delete"]["responses"]
    assert "409" in delete_task
    assert spec["paths"]["/tasks/test/add"]["post"]["responses"].keys() >= {"202", "422", "503"}


def test_client_routes_document_both_api_key_schemes() -> None:
    """authorize reads the headers itself; the document still names both ways to send a key."""
    spec = create_app(Settings(ENABLE_TEST_ENDPOINTS=True)).openapi()
    schemes = spec["components"]["securitySchemes"]
    assert schemes["HTTPBearer"] == {**schemes["HTTPBearer"], "type": "http", "scheme": "bearer"}
    assert schemes["APIKeyHeader"] == {
        **schemes["APIKeyHeader"],
        "type": "apiKey",
        "in": "header",
        "name": "X-API-Key",
    }
    for path, operations in spec["paths"].items():
        open_route = path.startswith(("/health", "/metrics")) and path != "/health/detail"
        for operation in operations.values():
            expected: list[dict[str, list[str]]] | None = (
                None if open_route else [{"HTTPBearer": []}, {"APIKeyHeader": []}]
            )
            assert operation.get("security") == expected, path
