"""The local stack behind `trustcard dev`: its redis-server, its state directory, its processes."""
