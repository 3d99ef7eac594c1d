"""Names outside clients rely on; keep them stable (see the architecture's Names section)."""

APP_NAME = "trustcard"
# Every task family runs on this one queue; plain Celery clients send to it by name.
QUEUE = "analysis"
