"""The task model the API, the tasks and the worker share: names, states, progress, the registry."""
