"""Every transport option of tq, declared once: name, default, unit, the layer that reads
it, what it means and how it is checked.

The channel's ``from_transport_options``, the stores' option lists, the envelope and the
README's configuration table all come from :data:`OPTIONS`; :func:`settings` checks a
``broker_transport_options`` dict and warns (once per process) about a name tq does not
know, naming the closest one it does. ``python -m tq_kombu.options`` prints the README
table.
"""

from __future__ import annotations

import difflib
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from .errors import ConfigurationError

logger = logging.getLogger(__name__)

#: Which part of tq reads an option.
LAYERS = ("channel", "transport", "envelope", "keyring", "store", "redis", "sqlite")
#: Layers whose options the transport hands to the store.
STORE_LAYERS = ("store", "redis", "sqlite")


@dataclass(frozen=True)
class Option:
    """One transport option."""

    name: str
    default: Any
    unit: str
    layer: str
    meaning: str
    #: Turns a configured value into the value used; raises ValueError saying what is wrong.
    check: Callable[[Any], Any]
    #: The README's text for the default, when the value itself does not say it.
    default_text: str | None = None
    #: The keyword the driver takes, when the store passes the option on (redis-py).
    passed_as: str | None = None

    def default_shown(self) -> str:
        return self.default_text or f"`{self.default!r}`".replace("'", '"')


def _number(value: Any, kind: type) -> Any:
    if isinstance(value, bool):
        raise ValueError("a number is needed, not a boolean")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError("a number is needed") from None
    if kind is int:
        if number != int(number):
            raise ValueError("a whole number is needed")
        return int(number)
    return number


def seconds(value: Any) -> float:
    number = float(_number(value, float))
    if not number > 0:
        raise ValueError("must be greater than 0 seconds")
    return number


def at_least(minimum: int) -> Callable[[Any], int]:
    def check(value: Any) -> int:
        number = int(_number(value, int))
        if number < minimum:
            raise ValueError(f"must be at least {minimum}")
        return number

    return check


def one_of(*choices: str) -> Callable[[Any], str]:
    def check(value: Any) -> str:
        text = str(value).lower()
        if text not in choices:
            raise ValueError(f"use one of {', '.join(repr(c) for c in choices)}")
        return text

    return check


def switch(value: Any) -> str:
    if value is True or str(value).lower() in ("on", "true", "1", "yes", "aes-256-gcm"):
        return "on"
    if value is False or str(value).lower() in ("off", "false", "0", "no", "none"):
        return "off"
    raise ValueError("use 'on' or 'off'")


def text(value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError("a non-empty string is needed")
    return value


def mapping(value: Any) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise ValueError("a dict of key id -> base64 key is needed")
    return value


def _synchronous(value: Any) -> str:
    return one_of("off", "normal", "full", "extra")(value).upper()


_OPTIONS = (
    Option("lease_seconds", 30.0, "seconds", "channel",
           "how long a delivered message stays leased without renewal", seconds),
    Option("max_deliveries", 5, "deliveries", "channel",
           "deliveries after which a message is set aside as dead (`max_deliveries`)",
           at_least(1)),
    Option("fetch_batch_max", 100, "messages", "channel",
           "most messages leased in one round trip when prefetch is unlimited", at_least(1)),
    Option("wait_timeout_seconds", 1.0, "seconds", "channel",
           "longest blocking wait before an idle consumer fetches anyway "
           "(returns expired leases)", seconds),
    Option("auto_delete_expires_seconds", 60.0, "seconds", "channel",
           "expiry of auto-delete queues declared without `x-expires`, kept alive while "
           "consumed", seconds),
    Option("queue_sweep_interval_seconds", 5.0, "seconds", "transport",
           "how often a consuming process deletes expired queues", seconds),
    Option("encryption", "on", "", "keyring",
           '`"off"` stores payloads in clear (one warning per process)', switch),
    Option("encryption_keys", None, "", "keyring",
           "key ring: `{key_id: base64 of 32 bytes}` (env: `id:b64,id:b64`, first active)",
           mapping, default_text="`TQ_ENCRYPTION_KEYS`"),
    Option("encryption_key_id", None, "", "keyring",
           "the key new messages are sealed with", text, default_text="first key"),
    Option("compress_min_bytes", 1024, "bytes", "envelope",
           "payloads at least this big are compressed before encryption", at_least(0)),
    Option("compression", "zlib", "", "envelope",
           '`"zlib"` or `"zstd"` (the `zstd` extra)', one_of("zlib", "zstd")),
    Option("max_message_bytes", 64 * 2**20, "bytes", "envelope",
           "largest message, serialized, before compression: publishing a larger one fails "
           "(`MessageTooLarge`) and a stored one goes dead as `too_large`", at_least(1),
           default_text="`67108864` (64 MiB)"),
    Option("dead_letter_ttl_seconds", 7 * 24 * 3600.0, "seconds", "store",
           "dead messages older than this are dropped", seconds,
           default_text="`604800` (7 days)"),
    Option("dead_letter_max_per_queue", 10_000, "messages", "store",
           "most dead messages kept per queue, oldest dropped first", at_least(1)),
    Option("dependency_record_ttl_seconds", 7 * 24 * 3600.0, "seconds", "store",
           "how long a finished task's outcome is kept for children published later "
           "(task dependencies)", seconds, default_text="`604800` (7 days)"),
    Option("key_prefix", "tq", "", "redis",
           "Redis: prefix of every key (`{tq:<queue>}:ready`, ...; see the key names below)",
           text),
    Option("socket_timeout_seconds", None, "seconds", "redis",
           "Redis: how long a command may wait for its reply", seconds,
           default_text="none", passed_as="socket_timeout"),
    Option("socket_connect_timeout_seconds", None, "seconds", "redis",
           "Redis: how long connecting may take", seconds,
           default_text="none", passed_as="socket_connect_timeout"),
    Option("poll_interval_seconds", 0.05, "seconds", "sqlite",
           "SQLite: how often an idle consumer checks whether the database changed "
           "(`PRAGMA data_version`)", seconds),
    Option("busy_timeout_seconds", 30.0, "seconds", "sqlite",
           "SQLite: how long a writer waits for the database lock", seconds),
    Option("synchronous", "FULL", "", "sqlite",
           'SQLite: `PRAGMA synchronous`; `"NORMAL"` is faster and in WAL mode still loses '
           "nothing when a process crashes (only on power loss)", _synchronous),
)  # fmt: skip

#: Every tq transport option by name.
OPTIONS: dict[str, Option] = {option.name: option for option in _OPTIONS}

#: Put into transport options by kombu or Celery themselves (kombu's virtual channel, the
#: connection retry settings, a publish retry policy): never warned about.
KOMBU_OPTIONS = frozenset(
    {
        "body_encoding",
        "deadletter_queue",
        "max_retries",
        "interval_start",
        "interval_step",
        "interval_max",
        "connect_retries_timeout",
        "retry_errors",
        "errback",
        "on_revive",
    }
)

_STOCK = "an option of kombu's stock Redis transport, which tq does not use"
#: Options users carry over from kombu's stock Redis transport: what tq does instead.
STOCK_REDIS_OPTIONS: dict[str, str] = {
    "visibility_timeout": "tq leases each message instead: set lease_seconds (renewed while "
    "a worker holds the message, so it can stay short)",
    "global_keyprefix": "set key_prefix instead",
    "socket_timeout": "set socket_timeout_seconds instead",
    "socket_connect_timeout": "set socket_connect_timeout_seconds instead",
    "polling_interval": "tq does not poll: idle consumers block in the store "
    "(SQLite: poll_interval_seconds)",
    "priority_steps": "tq takes any priority 0..255, higher first, without steps",
    "queue_order_strategy": "tq hands out the most urgent message of all consumed queues",
    **{
        name: _STOCK
        for name in (
            "sep",
            "ack_emulation",
            "unacked_key",
            "unacked_index_key",
            "unacked_mutex_key",
            "unacked_mutex_expire",
            "unacked_restore_limit",
            "unacked_restore_interval",
            "unacked_restore_throttle",
            "fanout_prefix",
            "fanout_patterns",
            "socket_keepalive",
            "socket_keepalive_options",
            "max_connections",
            "health_check_interval",
            "retry_on_timeout",
            "client_name",
            "master_name",
            "min_other_sentinels",
            "sentinel_kwargs",
        )
    },
}

_warned: set[str] = set()


def names(*layers: str) -> tuple[str, ...]:
    """The options read by ``layers``, in table order."""
    return tuple(option.name for option in _OPTIONS if option.layer in layers)


def check_option(name: str, value: Any) -> Any:
    """``value`` as option ``name`` uses it; ConfigurationError saying what is wrong."""
    option = OPTIONS[name]
    try:
        return option.check(value)
    except ValueError as exc:
        example = option.default if option.default is not None else "..."
        unit = f" ({option.unit})" if option.unit else ""
        raise ConfigurationError(
            f"transport option {name}={value!r} is not valid: {exc}; set it in "
            f"broker_transport_options, e.g. {{{name!r}: {example!r}}}{unit}"
        ) from None


def settings(options: Mapping[str, Any] | None) -> dict[str, Any]:
    """Every tq option: the configured value (checked) or its default. Warns once per
    process about each option name tq does not know."""
    given = dict(options or {})
    warn_unknown(given)
    return {
        name: option.default if given.get(name) is None else check_option(name, given[name])
        for name, option in OPTIONS.items()
    }


def unknown_options(options: Mapping[str, Any]) -> dict[str, str]:
    """Option names tq does not read, each with what to do about it."""
    unknown = {}
    for name in options:
        if name in OPTIONS or name in KOMBU_OPTIONS:
            continue
        if name in STOCK_REDIS_OPTIONS:
            unknown[name] = f"tq ignores transport option {name!r}: {STOCK_REDIS_OPTIONS[name]}"
            continue
        close = difflib.get_close_matches(str(name), list(OPTIONS), n=1, cutoff=0.6)
        hint = f"did you mean {close[0]!r}?" if close else "see README, Configuration"
        unknown[name] = f"tq ignores unknown transport option {name!r}: {hint}"
    return unknown


def warn_unknown(options: Mapping[str, Any]) -> None:
    for name, message in unknown_options(options).items():
        if name not in _warned:
            _warned.add(name)
            logger.warning("%s", message)


def markdown_table() -> str:
    """The README's table of options."""
    lines = ["| option | default | unit | read by | meaning |", "| --- | --- | --- | --- | --- |"]
    for option in _OPTIONS:
        lines.append(
            f"| `{option.name}` | {option.default_shown()} | {option.unit or '-'} "
            f"| {option.layer} | {option.meaning} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    print(markdown_table())
