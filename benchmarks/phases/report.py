"""The table of one run, and where tq stands against the floors of issue #12."""

from __future__ import annotations

Results = dict[str, dict[str, float]]
NAMES = ("stock", "tq", "tq-plain", "tq-sqlite", "ceiling")
#: (column, numerator transport, denominator transport)
RATIOS = (
    ("tq/stock", "tq", "stock"),
    ("tq/ceil", "tq", "ceiling"),
    ("sql/stock", "tq-sqlite", "stock"),
    ("sql/ceil", "tq-sqlite", "ceiling"),
)


def lower_is_better(figure: str) -> bool:
    return any(unit in figure for unit in ("ms", "MB", "bytes"))


def ratio(figure: str, mine: float | None, other: float | None) -> str:
    """``mine`` against ``other`` (above 1: ``mine`` is better), or blank."""
    if other is None or mine is None or "parents" in figure or not mine or not other:
        return f"{'':>10}"
    return f"{(other / mine if lower_is_better(figure) else mine / other):>10.2f}"


def table(results: Results) -> list[str]:
    """One line per figure (in the order first measured), a column per transport."""
    figures: list[str] = []
    for name in NAMES:
        figures += [f for f in results.get(name, {}) if f not in figures]
    head = f"{'figure':<32}" + "".join(f"{n:>10}" for n in NAMES)
    lines = [head + "".join(f"{column:>10}" for column, _, _ in RATIOS)]
    for figure in figures:
        values = [results.get(name, {}).get(figure) for name in NAMES]
        cells = "".join(f"{'-':>10}" if v is None else f"{v:>10.2f}" for v in values)
        by_name = dict(zip(NAMES, values, strict=True))
        ratios = "".join(ratio(figure, by_name[a], by_name[b]) for _, a, b in RATIOS)
        lines.append(f"{figure:<32}{cells}{ratios}")
    return lines


def targets(results: Results) -> list[str]:
    """Each floor of issue #12 this run measured: the figure, the floor, met or missed."""

    def get(name: str, figure: str) -> float | None:
        return results.get(name, {}).get(figure)

    lines: list[str] = []

    def check(what: str, value: float | None, floor: float, at_most: bool = False) -> None:
        if value is None:
            return
        met = value <= floor if at_most else value >= floor
        sign = "<=" if at_most else ">="
        lines.append(f"{'met   ' if met else 'MISSED'} {what}: {value:.2f} ({sign} {floor:g})")

    def share(a: float | None, b: float | None) -> float | None:
        return a / b if a is not None and b else None

    solo, prefork = "drain/s solo", "drain/s prefork -c 2"
    check("drain tq Redis solo / ceiling", share(get("tq", solo), get("ceiling", solo)), 0.6)
    check("drain tq Redis prefork / stock", share(get("tq", prefork), get("stock", prefork)), 3.0)
    check(
        "drain tq SQLite solo / ceiling", share(get("tq-sqlite", solo), get("ceiling", solo)), 0.4
    )
    prefetch1 = get("tq-sqlite", prefork + " prefetch 1")
    check(
        "drain tq SQLite prefork prefetch 1 / prefetch 4",
        share(prefetch1, get("tq-sqlite", prefork)),
        0.5,
    )
    rate = share(get("tq", "publish/s"), get("ceiling", "publish/s"))
    check("publish tq Redis rate / in-memory rate", rate, 0.65)
    check("publish tq Redis p50 ms", get("tq", "publish p50 ms"), 0.30, at_most=True)
    for name, floor in (("tq", 20_000), ("tq-sqlite", 10_000)):
        for how in ("bulk", "group"):
            check(f"{how} publish {name} msgs/s", get(name, f"{how}/s"), floor)
    check("pickup p50 ms tq Redis", get("tq", "pickup p50 ms"), 2, at_most=True)
    check("pickup p50 ms tq SQLite", get("tq-sqlite", "pickup p50 ms"), 50, at_most=True)
    for name, share_floor in (("tq", 0.9), ("tq-sqlite", 0.8)):
        deep = [f for f in results.get(name, {}) if f.startswith("depth ") and "drain" in f]
        if len(deep) == 2:
            shallow, big = sorted(deep, key=lambda f: int(f.split()[1]))
            check(
                f"depth {name} {big.split()[1]} / {shallow.split()[1]}",
                share(get(name, big), get(name, shallow)),
                share_floor,
            )
    for pool in ("solo", "prefork -c 2", "solo after work", "prefork -c 2 after work"):
        figure = f"idle RSS MB {pool}"
        for name in ("tq", "tq-sqlite"):
            tq, stock = get(name, figure), get("stock", figure)
            if tq is not None and stock is not None:
                check(f"idle RSS {name} {pool} minus stock, MB", tq - stock, 5, at_most=True)
    return lines


def report(results: Results) -> str:
    plain, child = (
        results["tq"].get("publish p50 ms"),
        results["tq"].get("publish 3 parents p50 ms"),
    )
    notes = []
    if plain and child:
        notes.append(f"a child with 3 parents costs {child / plain:.2f}x a plain tq publish (p50)")
    notes += [
        "ratios above 1 mean tq is better (rates: tq/other; ms, MB, bytes: other/tq);",
        "tq is encrypted, tq-plain is not; ceil is Celery's own in-memory ceiling",
    ]
    return "\n".join(
        ["", *table(results), "", *notes, "", "targets of issue #12:", *targets(results)]
    )
