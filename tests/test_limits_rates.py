"""Rates as users write them: what each form means, and a clear error for a bad one."""

from __future__ import annotations

from typing import Any

import pytest

from tq_celery_ext.limits.rates import Rate, parse_rate
from tq_kombu.errors import ConfigurationError

SETTING = "tq_rate_limits['api_calls']"


@pytest.mark.parametrize(
    ("written", "limit", "per_seconds", "burst"),
    [
        ("100/m", 100, 60, 0),
        ("50/h", 50, 3600, 0),
        ("10/s", 10, 1, 0),
        ("5/d", 5, 86400, 0),
        ("100/60s", 100, 60, 0),
        ("3/1.5s", 3, 1.5, 0),
        ("1/.5s", 1, 0.5, 0),
        (" 7 / 2h ", 7, 7200, 0),
        ("1.0/s", 1, 1, 0),
        ({"rate": "10/s", "burst": 5}, 10, 1, 5),
        ({"rate": "10/s"}, 10, 1, 0),
    ],
)
def test_each_accepted_form_means_a_count_per_period_plus_a_burst(
    written: Any, limit: int, per_seconds: float, burst: int
) -> None:
    assert parse_rate(written, SETTING) == Rate(limit, per_seconds, burst)


def test_the_gcra_interval_is_the_period_over_the_count_rounded_up_to_a_microsecond() -> None:
    assert parse_rate("10/s", SETTING).emission_interval_us == 100_000
    assert parse_rate("3/s", SETTING).emission_interval_us == 333_334
    assert parse_rate("100/m", SETTING).emission_interval_us == 600_000


def test_the_tolerance_lets_burst_starts_come_ahead_of_the_steady_stream() -> None:
    assert parse_rate({"rate": "10/s", "burst": 5}, SETTING).tolerance_us == 500_000
    assert parse_rate("10/s", SETTING).tolerance_us == 0


def test_a_rate_reads_back_in_its_shortest_form() -> None:
    assert str(parse_rate("100/60s", SETTING)) == "100/m"
    assert str(parse_rate("7/7200s", SETTING)) == "7/2h"
    assert str(parse_rate({"rate": "3/1.5s", "burst": 2}, SETTING)) == "3/1.5s (burst 2)"


@pytest.mark.parametrize(
    ("written", "why"),
    [
        ("fast", "expected '<count>/<period>'"),
        ("10/x", "expected '<count>/<period>'"),
        ("10", "expected '<count>/<period>'"),
        ("1e3/s", "expected '<count>/<period>'"),
        ("-1/s", "expected '<count>/<period>'"),
        ("0/s", "at least 1"),
        ("10/0s", "between 1 microsecond and 366 days"),
        ("10/400d", "between 1 microsecond and 366 days"),
        ("2000000/s", "more than 1,000,000 starts per second"),
        (10, "a string or a dict, not int"),
        (None, "a string or a dict, not NoneType"),
        ({"rate": "10/s", "burst": -1}, "'burst' must be a whole number"),
        ({"rate": "10/s", "burst": 1.5}, "'burst' must be a whole number"),
        ({"rate": "10/s", "burst": True}, "'burst' must be a whole number"),
        ({"burst": 5}, "needs a 'rate'"),
        ({"rate": 10}, "'rate' must be a string"),
        ({"rate": "10/s", "brust": 5}, "unknown key(s) 'brust'"),
        ({"rate": "ten/s"}, "expected '<count>/<period>'"),
    ],
)
def test_a_malformed_rate_is_refused_naming_the_setting_the_value_and_a_good_example(
    written: Any, why: str
) -> None:
    with pytest.raises(ConfigurationError) as caught:
        parse_rate(written, SETTING)
    message = str(caught.value)
    assert message.startswith(f"{SETTING} = {written!r} is not a rate: "), message
    assert why in message
    assert "write e.g. '100/m'" in message and "{'rate': '10/s', 'burst': 5}" in message


@pytest.mark.parametrize(
    ("written", "better", "interval_us"),
    [("2.5/s", "5/2s", 400_000), ("0.3/m", "3/10m", 200_000_000), ("2.5/1.5m", "5/3m", 36_000_000)],
)
def test_a_fractional_count_is_refused_with_the_same_rate_in_whole_starts(
    written: str, better: str, interval_us: int
) -> None:
    with pytest.raises(ConfigurationError, match=f"must be a whole number \\(write '{better}'\\)"):
        parse_rate(written, SETTING)
    # and the suggestion is the same rate
    assert parse_rate(better, SETTING).emission_interval_us == interval_us
