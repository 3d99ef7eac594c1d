"""What runs only in the worker process: its task pool, signal handlers and liveness heartbeat."""
