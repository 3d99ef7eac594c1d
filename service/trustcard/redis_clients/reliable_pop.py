"""Take a message off a queue and store its unacked copy in one server-side step.

kombu's Redis channel pops with BRPOP and writes the unacked copy afterwards, from the client
(kombu/transport/redis.py:1459 `_brpop_start`, :1476 `_brpop_read`, then
virtual/base.py:648 -> redis.py:476 `QoS.append`). A message popped as Redis dies, or whose
reply the connection loses, is then in neither the queue nor the `unacked` hash: lost
(docs/upstream-redis-outages.md, section 6).

Here a Lua script pops from the first non-empty key, in kombu's order (priority steps, then
queues in the channel's round-robin cycle), and writes the `unacked` hash entry and its
`unacked_index` score in the same script: Redis runs it atomically, logs it to the AOF and
replicates it as one transaction. Whatever happens to the reply, the message stays in Redis
and kombu's `restore_visible` puts it back after the visibility timeout. The hash entry is
kombu's own (`[message, exchange, routing_key]`, the message bytes as published), so acks,
rejects and restores work unchanged.

The script also leaves a receipt, `<attempt id> <delivery tag>` in a key of the consuming
channel (expiring with the visibility timeout). When a pop's reply is lost with the connection,
the worker asks, once reconnected, whether that attempt popped a message, and if so puts it back
at once (`resolve_lost_pops`), instead of leaving it to the visibility timeout.

A script cannot block, so an idle consumer waits on the server between pops: `XREAD BLOCK`
on a stream nobody writes to, a read-only command that consumes nothing and answers after
`idle_poll_interval`. A busy consumer pops back to back, as with BRPOP.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from time import time
from typing import Any
from uuid import uuid4

# KEYS: the queue keys in pop order, then the unacked hash, the unacked index, the receipt.
# ARGV: the index score (the client's time, as kombu's QoS.append writes it), the attempt id,
# the receipt's time to live in ms, then per queue key '1' to store the unacked copy or '0'
# (a no_ack consumer's queue: kombu stores nothing for those, nobody would ack the copy).
# Returns nil, or {key, message, 1 if the unacked copy is stored else 0}.
POP_AND_RECORD = """
local unacked, index, receipt = KEYS[#KEYS - 2], KEYS[#KEYS - 1], KEYS[#KEYS]
for i = 1, #KEYS - 3 do
  local item = redis.call('RPOP', KEYS[i])
  if item and ARGV[3 + i] ~= '1' then
    return {KEYS[i], item, 0}
  end
  if item then
    -- A message kombu cannot read either: hand it over as BRPOP would (kombu rejects it).
    local ok, message = pcall(cjson.decode, item)
    if not ok or type(message) ~= 'table' or type(message['properties']) ~= 'table' then
      return {KEYS[i], item, 0}
    end
    local properties = message['properties']
    local tag, info = properties['delivery_tag'], properties['delivery_info']
    if type(tag) ~= 'string' or type(info) ~= 'table' then
      return {KEYS[i], item, 0}
    end
    -- kombu's record, dumps([raw, exchange, routing_key]), around the message's own bytes.
    local record = '[' .. item .. ',' .. cjson.encode(info['exchange']) .. ','
      .. cjson.encode(info['routing_key']) .. ']'
    -- pcall: a refused write (OOM) must not fail the script after its RPOP.
    local stored = redis.pcall('ZADD', index, ARGV[1], tag)
    if type(stored) == 'table' and stored['err'] then
      return {KEYS[i], item, 0}
    end
    stored = redis.pcall('HSET', unacked, tag, record)
    if type(stored) == 'table' and stored['err'] then
      redis.pcall('ZREM', index, tag)
      return {KEYS[i], item, 0}
    end
    redis.pcall('SET', receipt, ARGV[2] .. ' ' .. tag, 'PX', ARGV[3])
    return {KEYS[i], item, 1}
  end
end
return false
"""

# The idle wait's stream: never written, so XREAD ... $ waits its whole BLOCK time.
IDLE_WAIT_KEY = "_trustcard.idle_wait"
# One per consuming channel (a uuid follows): the last pop's attempt id and delivery tag.
RECEIPT_KEY_PREFIX = "_trustcard.pop_receipt."


@dataclass(frozen=True)
class PopAttempt:
    """A pop sent on a connection: its receipt key (as sent, prefix included) and its id."""

    receipt_key: str
    attempt_id: str


# Pops whose reply was lost with their connection, in this process; any channel resolves them
# (Celery replaces the channels on a reconnect).
LOST_POPS: deque[PopAttempt] = deque()


@dataclass(frozen=True)
class Pop:
    """One pop: the command to send and the attempt it is."""

    command: list[Any]
    attempt: PopAttempt


def pop(
    queue_keys: list[tuple[str, bool]],
    unacked_key: str,
    index_key: str,
    receipt_key: str,
    receipt_ttl_seconds: float,
) -> Pop:
    """The EVAL command (name and arguments) of one pop, under a fresh attempt id.

    `queue_keys`: each key in pop order, and whether to store the unacked copy of its message.
    """
    attempt = PopAttempt(receipt_key, uuid4().hex)
    keys = [key for key, _ in queue_keys] + [unacked_key, index_key, receipt_key]
    records = ["1" if record else "0" for _, record in queue_keys]
    ttl_ms = max(1000, round(receipt_ttl_seconds * 1000))
    arguments = [repr(time()), attempt.attempt_id, ttl_ms, *records]
    return Pop(["EVAL", POP_AND_RECORD, len(keys), *keys, *arguments], attempt)


def popped_tag(receipt: bytes | str | None, attempt: PopAttempt) -> str | None:
    """The delivery tag that `attempt` popped, per its receipt; None if it popped nothing."""
    if receipt is None:
        return None
    text = receipt.decode() if isinstance(receipt, bytes) else receipt
    attempt_id, _, tag = text.partition(" ")
    return tag if attempt_id == attempt.attempt_id and tag else None


def idle_wait_command(wait_key: str, seconds: float) -> list[Any]:
    """A read-only command that answers nil after `seconds` (it consumes nothing)."""
    return ["XREAD", "BLOCK", max(1, round(seconds * 1000)), "STREAMS", wait_key, "$"]
