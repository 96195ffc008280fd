"""Dead letters on Redis: burial by id, replay, retention (``bury_message.lua``,
``replay.lua``, ``trim_dead.lua``; the retention include also runs inside fetch and
settle whenever a message dies there)."""

from __future__ import annotations

from ..contract import DeadLetters
from ..model import DeadLetter, NewMessage, RetentionPolicy, State
from .client import RedisShared, translated
from .codec import dead_args, ms_or_empty, sealed_failure

__all__ = ["RedisDeadLetters"]

#: Replays sent per pipelined round trip (each one atomic on its own).
REPLAY_BATCH = 500


class RedisDeadLetters(RedisShared, DeadLetters):
    """Set aside by id, replay, trim, failure records."""

    def _bury_payload(self, queue: str, message: NewMessage, dead: DeadLetter) -> State | None:
        args = [
            message.message_id,
            message.payload,
            message.priority,
            ms_or_empty(message.eta),
            message.task_name,
            message.task_id,
            *dead_args(dead),
            "" if dead.delivery_count is None else int(dead.delivery_count),
            ms_or_empty(dead.first_seen),
            *self._retention_args(),
            self._record_ttl_ms(),
        ]
        before = self._run("bury_message", self.keys.group(queue), args).decode()
        return None if before == "stored" else State(before)

    def _replay_many(
        self, queue: str, message_ids: list[str], to_queue: str, priority: int | None
    ) -> int:
        """One replay.lua call per message, sent in pipelined batches."""
        keys = self.keys.group(queue) + self.keys.group(to_queue)
        new_priority = "" if priority is None else priority
        script = self.scripts.get("replay")
        replayed = 0
        for start in range(0, len(message_ids), REPLAY_BATCH):
            with translated(), self.client.pipeline(transaction=False) as pipe:
                for message_id in message_ids[start : start + REPLAY_BATCH]:
                    script(keys=keys, args=[message_id, new_priority], client=pipe)
                replayed += sum(int(done) for done in pipe.execute())
        return replayed

    def _trim_dead(self, queue: str, policy: RetentionPolicy) -> int:
        args = [max(int(policy.ttl_seconds * 1000), 0), int(policy.max_per_queue)]
        return int(self._run("trim_dead", self.keys.group(queue), args))

    def _dead_failure(self, queue: str, message_id: str) -> bytes:
        with translated():
            raw = self.client.hget(self.keys.queue(queue)["meta"], message_id)
        return sealed_failure(raw)
