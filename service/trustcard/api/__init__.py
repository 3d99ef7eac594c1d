"""The HTTP API: app factory, routes per resource, dependencies, error handlers."""
