"""The task record and the task message in one Redis round trip, when both live on one server.

A submission writes two keys: our record (result backend database) and kombu's message (broker
database). When the broker and the backend are databases of the same Redis server (the chart's
and the local setup's layout), one Lua script does both: it SETs the record, then runs kombu's
captured commands (LPUSH, and PEXPIRE for a queue with an expiry). That saves a round trip and
its client work per submission (~7 % of the API's CPU per submission in the py-spy profile), and
a script runs atomically: no client ever sees a message whose record is not there yet, and a
failing command stops the script before the message when the record could not be written.

A server that refuses the script (an ACL without EVALSHA or SELECT, a proxy without scripting)
turns it off for the process, which falls back to the two writes.

With REDIS_WAIT_REPLICAS set, `WAIT n timeout` follows the script in one pipeline, so on the
same connection (WAIT counts the replicas that acknowledged this connection's writes): fewer
than n raises ReplicasMissing, and the API answers 503 with the id, outcome unknown (the write
is on the master and may or may not survive a failover).
"""

from __future__ import annotations

import logging
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import NoScriptError, ResponseError

from trustcard.api.broker_publish import Command
from trustcard.task_model.registry import TaskRecord, record_key

log = logging.getLogger(__name__)

# KEYS[1]: the record; KEYS[2..]: the key of each broker command, in order.
# ARGV: record db, record JSON, TTL s, broker db, then per command: its name, n, its n arguments.
# SELECT inside a script applies to the script only (Redis >= 2.8.12), not to the connection.
SCRIPT = """
redis.call('SELECT', ARGV[1])
redis.call('SET', KEYS[1], ARGV[2], 'EX', ARGV[3])
redis.call('SELECT', ARGV[4])
local at = 5
for i = 2, #KEYS do
  local count = tonumber(ARGV[at + 1])
  redis.call(ARGV[at], KEYS[i], unpack(ARGV, at + 2, at + 1 + count))
  at = at + 2 + count
end
return #KEYS - 1
"""

# What names the server and the account on it (a unix socket has a path, no host).
SERVER_IDENTITY = ("host", "port", "path", "username", "password")

# kombu's Redis transport publishes with these; each takes its key first.
KEYED_COMMANDS = frozenset({"lpush", "pexpire"})


class ScriptRefused(Exception):
    """The server refused the script itself: write the record and the message separately."""


class ReplicasMissing(Exception):
    """Fewer replicas than asked acknowledged the submission's writes within the timeout."""

    def __init__(self, acknowledged: int, wanted: int, timeout_ms: int) -> None:
        super().__init__(
            f"{acknowledged} of {wanted} replicas acknowledged the write within {timeout_ms} ms"
        )


class RecordAndPublish:
    """Runs SCRIPT on the broker's client; build it with `for_clients` (None: two servers)."""

    def __init__(
        self,
        broker: Redis,
        record_db: int,
        broker_db: int,
        wait_replicas: int = 0,
        wait_timeout_ms: int = 0,
    ) -> None:
        self.broker = broker
        self.record_db = record_db
        self.broker_db = broker_db
        # WAIT after the script (0: not); see the module docstring.
        self.wait_replicas = wait_replicas
        self.wait_timeout_ms = wait_timeout_ms
        self.script = broker.register_script(SCRIPT)
        self.enabled = True
        # Has run once here: a later refusal is a failure of that submission, not the setup.
        self.worked = False

    @classmethod
    def for_clients(
        cls, broker: Redis, backend: Redis, wait_replicas: int = 0, wait_timeout_ms: int = 0
    ) -> RecordAndPublish | None:
        """One when both clients reach the same server (they differ only by database)."""
        broker_pool, backend_pool = broker.connection_pool, backend.connection_pool
        if broker_pool.connection_class is not backend_pool.connection_class:
            return None
        broker_kwargs = broker_pool.connection_kwargs
        backend_kwargs = backend_pool.connection_kwargs
        if any(broker_kwargs.get(name) != backend_kwargs.get(name) for name in SERVER_IDENTITY):
            return None
        # Behind Sentinels the pools have no host: the master's name says which server.
        if getattr(broker_pool, "service_name", None) != getattr(
            backend_pool, "service_name", None
        ):
            return None
        broker_db = int(broker_kwargs.get("db") or 0)
        backend_db = int(backend_kwargs.get("db") or 0)
        return cls(
            broker,
            record_db=backend_db,
            broker_db=broker_db,
            wait_replicas=wait_replicas,
            wait_timeout_ms=wait_timeout_ms,
        )

    def accepts(self, commands: list[Command]) -> bool:
        return self.enabled and all(name in KEYED_COMMANDS for name, _ in commands)

    async def write(self, record: TaskRecord, ttl_seconds: int, commands: list[Command]) -> None:
        """Record, then message, atomically; raises redis-py's errors when Redis fails."""
        keys: list[Any] = [record_key(record.task_id)]
        args: list[Any] = [self.record_db, record.to_json(), ttl_seconds, self.broker_db]
        for name, command_args in commands:
            key, *rest = command_args
            keys.append(key)
            args += [name, len(rest), *rest]
        try:
            if self.wait_replicas:
                await self._write_and_wait(keys, args)
            else:
                await self.script(keys=keys, args=args)
        except NoScriptError:
            raise  # the script object loads it itself; a second NOSCRIPT is a real failure
        except ResponseError as exc:
            if not self.worked:
                # Never worked here: the server does not run it (permissions, no scripting).
                self.enabled = False
                log.warning(
                    "record and message in one script refused (%s): two writes from now on", exc
                )
            raise ScriptRefused(str(exc)) from exc
        self.worked = True

    async def _write_and_wait(self, keys: list[Any], args: list[Any]) -> None:
        """The script, then WAIT, on one connection (a pipeline); the pipeline loads the script."""
        async with self.broker.pipeline(transaction=False) as pipe:
            await self.script(keys=keys, args=args, client=pipe)
            pipe.execute_command("WAIT", self.wait_replicas, self.wait_timeout_ms)
            _, acknowledged = await pipe.execute()
        self.worked = True  # the script ran: a refusal of WAIT below is not the setup's
        if int(acknowledged) < self.wait_replicas:
            raise ReplicasMissing(int(acknowledged), self.wait_replicas, self.wait_timeout_ms)


async def confirm_on_replicas(
    backend: Redis, record: TaskRecord, ttl_seconds: int, replicas: int, timeout_ms: int
) -> None:
    """WAIT for a submission that took the two-write path (the first of a process, or one the
    script could not carry): kombu published on its own connection, where we cannot WAIT.

    A server's replication stream is one ordered log, so writing the record again (the same
    value) on our connection after the publish and WAITing for that write covers the publish
    too. Only meaningful when broker and backend are one server (the caller checks).
    """
    async with backend.pipeline(transaction=False) as pipe:
        pipe.set(record_key(record.task_id), record.to_json(), ex=ttl_seconds)
        pipe.execute_command("WAIT", replicas, timeout_ms)
        _, acknowledged = await pipe.execute()
    if int(acknowledged) < replicas:
        raise ReplicasMissing(int(acknowledged), replicas, timeout_ms)
