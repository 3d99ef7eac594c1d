"""The Celery app carries the seed's settings and the reliability settings, from Settings."""

from __future__ import annotations

from trustcard.celery_app import create_celery_app
from trustcard.config import Settings


def test_seed_settings_and_routes() -> None:
    conf = create_celery_app(Settings()).conf
    assert conf.task_time_limit == 300
    assert conf.task_soft_time_limit == 240
    assert conf.worker_prefetch_multiplier == 1
    assert conf.worker_max_tasks_per_child == 50
    assert conf.task_routes == {
        "analysis.*": {"queue": "analysis"},
        "test.*": {"queue": "analysis"},
    }
    assert conf.task_default_queue == "analysis"


def test_reliability_settings() -> None:
    conf = create_celery_app(Settings(BROKER_VISIBILITY_TIMEOUT=900)).conf
    assert conf.task_acks_late is True
    assert conf.task_reject_on_worker_lost is True
    assert conf.task_track_started is True
    assert conf.worker_cancel_long_running_tasks_on_connection_loss is False
    assert conf.broker_connection_retry_on_startup is True
    assert conf.broker_transport_options["visibility_timeout"] == 900
    assert conf.accept_content == ["json"]


def test_settings_flow_into_the_app() -> None:
    settings = Settings(
        REDIS_URL="redis://broker.example:6390/0",
        WORKER_PREFETCH_MULTIPLIER=4,
        WORKER_MAX_TASKS_PER_CHILD=0,
        WORKER_CONCURRENCY=3,
        RESULT_EXPIRES=60,
    )
    app = create_celery_app(settings)
    conf = app.conf
    assert conf.broker_url == "redis://broker.example:6390/0"
    assert conf.result_backend.endswith("+redis://broker.example:6390/1")
    assert conf.worker_prefetch_multiplier == 4
    assert conf.worker_max_tasks_per_child is None  # 0 means never recycle
    assert conf.worker_concurrency == 3
    assert conf.result_expires == 60
    assert type(app.backend).__name__ == "TrustcardRedisBackend"
    assert app.backend.url == "redis://broker.example:6390/1"


def test_task_names_are_stable() -> None:
    app = create_celery_app(Settings())
    app.loader.import_default_modules()
    names = {name for name in app.tasks if not name.startswith("celery.")}
    assert names >= {"test.add", "test.sleep", "test.long_task"}


def test_worker_uses_our_pool_and_logging() -> None:
    from trustcard.celery_app import celery_config
    from trustcard.config import Settings

    config = celery_config(Settings())
    # Metrics callbacks and stall-free recycling live in this pool.
    assert config["worker_pool"] == "trustcard.worker.worker_pool:TaskPool"
    # Logging is ours (setup_logging receiver), so Celery's task log format would be dead config.
    assert "worker_task_log_format" not in config


def test_result_writes_retry_often_enough_to_land_soon_after_an_outage() -> None:
    """Read back from the live backend: Celery reads these names, not transport options."""
    backend = create_celery_app(Settings()).backend
    assert backend.always_retry is True
    assert backend.max_sleep_between_retries_ms == 2000
    assert backend.max_retries == 60
