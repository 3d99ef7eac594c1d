"""Is the Redis server allowed to evict our keys? Read its maxmemory-policy and judge it.

With any policy but `noeviction`, a Redis at `maxmemory` deletes keys to make room: queued task
messages (lists), unacked messages, task records and results. A 5 MB `allkeys-lru` Redis took
5,000 submissions with 202 and silently dropped 3,406 of them. `volatile-*` policies are not
safe either: our task records and results carry a TTL (RESULT_EXPIRES), so they are the keys a
volatile policy evicts first (queues carry none). Only `noeviction` keeps what was accepted;
at maxmemory it refuses writes instead, which the API turns into 503 naming the broker.

The policy comes from CONFIG GET; managed Redis often refuses CONFIG, so INFO memory's
`maxmemory_policy` field is the fallback. When both are refused the policy is unknown, which
counts as unsafe (the check cannot vouch for the server); REDIS_EVICTION_POLICY_CHECK=warn
accepts that after the operator checked the policy by hand.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import redis
import redis.asyncio
from redis.exceptions import ResponseError

from trustcard.config import redact_url

SAFE_POLICY = "noeviction"
UNKNOWN = "unknown"


@dataclass(frozen=True)
class EvictionPolicy:
    """A server's maxmemory-policy (or `unknown`) and what it means for us."""

    policy: str

    @property
    def safe(self) -> bool:
        return self.policy == SAFE_POLICY

    def problem(self, role: str, url: str) -> str | None:
        """One readable line when the policy can lose our keys (None when it cannot)."""
        if self.safe:
            return None
        where = f"{role} Redis {redact_url(url)}"
        if self.policy == UNKNOWN:
            return (
                f"{where}: cannot read maxmemory-policy (CONFIG GET and INFO memory refused); "
                f"if it is not {SAFE_POLICY}, Redis may evict queued tasks and task records. "
                "Check it, then set REDIS_EVICTION_POLICY_CHECK=warn to start anyway"
            )
        return (
            f"{where} has maxmemory-policy {self.policy}: at maxmemory it silently evicts "
            f"queued tasks and task records. Set maxmemory-policy {SAFE_POLICY} on that server "
            "(or REDIS_EVICTION_POLICY_CHECK=warn to accept the loss)"
        )


def _from_config(reply: Any) -> str | None:
    # CONFIG GET answers a dict (RESP3 / redis-py's parser) or a flat list.
    if isinstance(reply, dict):
        value = reply.get("maxmemory-policy") or reply.get(b"maxmemory-policy")
    elif isinstance(reply, list | tuple) and len(reply) >= 2:
        value = reply[1]
    else:
        value = None
    return value.decode() if isinstance(value, bytes) else value


def _from_info(info: dict[str, Any]) -> str | None:
    value = info.get("maxmemory_policy")
    return value.decode() if isinstance(value, bytes) else value


def read_policy(client: redis.Redis) -> EvictionPolicy:
    """The server's policy: CONFIG GET, else INFO memory; `unknown` when both are refused."""
    try:
        policy = _from_config(client.config_get("maxmemory-policy"))
        if policy:
            return EvictionPolicy(policy)
    except ResponseError:  # NOPERM, or CONFIG renamed away on managed Redis
        pass
    try:
        policy = _from_info(client.info("memory"))
    except ResponseError:
        policy = None
    return EvictionPolicy(policy or UNKNOWN)


async def read_policy_async(client: redis.asyncio.Redis) -> EvictionPolicy:
    """read_policy for the API's asyncio clients (connection errors propagate)."""
    try:
        policy = _from_config(await client.config_get("maxmemory-policy"))
        if policy:
            return EvictionPolicy(policy)
    except ResponseError:
        pass
    try:
        policy = _from_info(await client.info("memory"))
    except ResponseError:
        policy = None
    return EvictionPolicy(policy or UNKNOWN)
