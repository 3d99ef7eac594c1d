"""Every Redis client: redis-py settings, kombu's transport, the result backend, start-up checks."""
