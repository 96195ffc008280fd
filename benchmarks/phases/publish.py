"""Publish figures: one by one (rate, median call) and in bulk (rate, Redis bytes per message)."""

from __future__ import annotations

from .servers import Target, child


def one_by_one(target: Target, count: int, parents: int = 0) -> dict[str, float]:
    """``count`` ``apply_async`` calls (each depending on ``parents`` task ids)."""
    target.flush()
    return child(target, "publish", str(count), str(parents))


def in_bulk(target: Target, count: int, how: str, chunk: int = 10_000) -> dict[str, float]:
    """``count`` messages through ``tq_kombu.bulk`` (``how="bulk"``) or
    ``group(...).apply_async()`` (``how="group"``), checked all stored; on Redis also the
    bytes of ``used_memory`` each queued message costs."""
    target.flush()
    before = target.server.used_memory()
    figures = child(target, how, str(count), str(chunk))
    stored = target.backlog()
    if stored != count + 1:  # the warm-up publish is stored too
        raise RuntimeError(f"{target.name} {how}: {stored} of {count + 1} messages stored")
    if not target.sqlite:
        figures["bytes/msg"] = (target.server.used_memory() - before) / stored
    return figures
