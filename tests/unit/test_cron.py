from datetime import UTC, datetime, timedelta, timezone

import pytest

from runtime.cron import CronError, CronSchedule


def utc(
    year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0
) -> datetime:
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC)


# --- parse -----------------------------------------------------------------------------


def test_parse_plain() -> None:
    cron = CronSchedule.parse("0 9 * * 1-5")
    assert (cron.spec, cron.expression, cron.tz) == ("0 9 * * 1-5", "0 9 * * 1-5", "UTC")


@pytest.mark.parametrize("prefix", ["TZ", "CRON_TZ"])
def test_parse_time_zone_prefix(prefix: str) -> None:
    cron = CronSchedule.parse(f"{prefix}=Europe/Paris  0 9 * * *")
    assert (cron.expression, cron.tz) == ("0 9 * * *", "Europe/Paris")


@pytest.mark.parametrize(
    ("macro", "expression"),
    [("@daily", "0 0 * * *"), ("@hourly", "0 * * * *"), ("@weekly", "0 0 * * 0")],
)
def test_parse_macros_expand(macro: str, expression: str) -> None:
    cron = CronSchedule.parse(f"TZ=Asia/Tokyo {macro}")
    assert (cron.expression, cron.tz) == (expression, "Asia/Tokyo")


def test_unknown_time_zone() -> None:
    spec = "TZ=Mars/Olympus 0 9 * * *"
    with pytest.raises(CronError) as info:
        CronSchedule.parse(spec)
    assert str(info.value) == f"unknown time zone 'Mars/Olympus' in cron '{spec}'"


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("0 0 9 * * *", "has 6 fields; expected 5: minute hour day-of-month month day-of-week"),
        ("0 0 9 * * * 2026", "has 7 fields"),
        ("* * * *", "has 4 fields"),
        ("61 * * * *", "bad minute field '61'"),
        ("0 24 * * *", "bad hour field '24'"),
        ("0 9 * 13 *", "bad month field '13'"),
        ("0 9 * * 8", "bad day-of-week field '8'"),
        ("*/0 * * * *", "bad minute field '*/0'"),
        ("@reboot", "'@reboot' is not supported"),
        ("0 0 30 2 *", "never fires"),
        ("H 9 * * *", "H (hashed), R (random) and W (nearest weekday) are not supported"),
        ("R 9 * * *", "not supported"),
        ("0 9 15W * *", "not supported"),
    ],
)
def test_parse_errors(spec: str, message: str) -> None:
    with pytest.raises(CronError) as info:
        CronSchedule.parse(spec)
    assert f"cron '{spec}'" in str(info.value)
    assert message in str(info.value)


def test_names_that_contain_h_r_w_are_fine() -> None:
    assert CronSchedule.parse("0 9 * mar,jun thu,wed,fri").expression == "0 9 * mar,jun thu,wed,fri"


def test_cron_error_is_a_value_error() -> None:
    assert issubclass(CronError, ValueError)


# --- next_after / fire_times -----------------------------------------------------------


def test_next_after_utc_is_strictly_after() -> None:
    cron = CronSchedule.parse("0 9 * * *")
    assert cron.next_after(utc(2026, 3, 2, 8, 59, 59)) == utc(2026, 3, 2, 9)
    assert cron.next_after(utc(2026, 3, 2, 9)) == utc(2026, 3, 3, 9)


def test_next_after_returns_utc_for_any_aware_input() -> None:
    cron = CronSchedule.parse("*/15 * * * *")
    paris_summer = timezone(timedelta(hours=2))
    fire = cron.next_after(datetime(2026, 7, 1, 12, 7, tzinfo=paris_summer))
    assert fire == utc(2026, 7, 1, 10, 15)
    assert fire.tzinfo is UTC


def test_naive_datetime_rejected() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        CronSchedule.parse("0 9 * * *").next_after(datetime(2026, 1, 1))


def test_weekdays_only() -> None:
    cron = CronSchedule.parse("0 9 * * MON-FRI")
    # 2026-03-06 is a Friday.
    assert cron.next_after(utc(2026, 3, 6, 10)) == utc(2026, 3, 9, 9)


def test_new_york_nine_am_follows_dst() -> None:
    cron = CronSchedule.parse("TZ=America/New_York 0 9 * * *")
    # EST (UTC-5) before 2026-03-08, EDT (UTC-4) from then on.
    assert cron.next_after(utc(2026, 3, 6, 12)) == utc(2026, 3, 6, 14)
    assert cron.next_after(utc(2026, 3, 8, 0)) == utc(2026, 3, 8, 13)
    assert cron.fire_times(utc(2026, 3, 6), utc(2026, 3, 10)) == [
        utc(2026, 3, 6, 14),
        utc(2026, 3, 7, 14),
        utc(2026, 3, 8, 13),
        utc(2026, 3, 9, 13),
    ]


def test_fall_back_repeated_time_fires_once() -> None:
    cron = CronSchedule.parse("TZ=America/New_York 30 1 * * *")
    # 01:30 happens at 05:30 UTC (EDT) and again at 06:30 UTC (EST) on 2026-11-01.
    assert cron.fire_times(utc(2026, 10, 31), utc(2026, 11, 3)) == [
        utc(2026, 10, 31, 5, 30),
        utc(2026, 11, 1, 5, 30),
        utc(2026, 11, 2, 6, 30),
    ]
    # From between the two occurrences, the next firing is the next day.
    assert cron.next_after(utc(2026, 11, 1, 6)) == utc(2026, 11, 2, 6, 30)


def test_fall_back_hourly_has_one_firing_for_the_repeated_hour() -> None:
    cron = CronSchedule.parse("TZ=Europe/Paris 0 * * * *")
    # 02:00 CEST is 00:00 UTC, 02:00 CET (repeated) is 01:00 UTC on 2026-10-25.
    assert cron.fire_times(utc(2026, 10, 24, 23, 30), utc(2026, 10, 25, 3)) == [
        utc(2026, 10, 25, 0),
        utc(2026, 10, 25, 2),
        utc(2026, 10, 25, 3),
    ]


@pytest.mark.parametrize(
    ("spec", "after", "fire"),
    [
        # 02:30 does not exist on 2026-03-08 in New York: fires at 03:00 EDT = 07:00 UTC.
        ("TZ=America/New_York 30 2 * * *", utc(2026, 3, 7, 12), utc(2026, 3, 8, 7)),
        # ... nor on 2026-03-29 in Paris: fires at 03:00 CEST = 01:00 UTC.
        ("TZ=Europe/Paris 30 2 * * *", utc(2026, 3, 28, 12), utc(2026, 3, 29, 1)),
        # Lord Howe moves 30 minutes, 02:00 -> 02:30 (+10:30 -> +11) on 2026-10-04.
        ("TZ=Australia/Lord_Howe 0 * * * *", utc(2026, 10, 3, 14, 30), utc(2026, 10, 3, 15, 30)),
    ],
)
def test_spring_forward_fires_when_the_gap_ends(spec: str, after: datetime, fire: datetime) -> None:
    assert CronSchedule.parse(spec).next_after(after) == fire


def test_spring_forward_collapses_skipped_times_into_one_firing() -> None:
    cron = CronSchedule.parse("TZ=Europe/Paris */30 * * * *")
    # 02:00 and 02:30 CET do not exist; 03:00 CEST (01:00 UTC) fires once.
    assert cron.fire_times(utc(2026, 3, 29, 0, 15), utc(2026, 3, 29, 2)) == [
        utc(2026, 3, 29, 0, 30),
        utc(2026, 3, 29, 1),
        utc(2026, 3, 29, 1, 30),
        utc(2026, 3, 29, 2),
    ]
    # And the daily 02:30 returns to normal the next day (00:30 UTC in CEST).
    daily = CronSchedule.parse("TZ=Europe/Paris 30 2 * * *")
    assert daily.next_after(utc(2026, 3, 29, 1)) == utc(2026, 3, 30, 0, 30)


def test_fire_times_is_half_open() -> None:
    cron = CronSchedule.parse("0 * * * *")
    assert cron.fire_times(utc(2026, 1, 1, 1), utc(2026, 1, 1, 3)) == [
        utc(2026, 1, 1, 2),
        utc(2026, 1, 1, 3),
    ]
    assert cron.fire_times(utc(2026, 1, 1, 3), utc(2026, 1, 1, 1)) == []


# --- to_aws_scheduler ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "aws"),
    [
        ("0 9 * * 1-5", "cron(0 9 ? * 2-6 *)"),
        ("0 9 * * MON-FRI", "cron(0 9 ? * 2-6 *)"),
        ("0 0 1 * *", "cron(0 0 1 * ? *)"),
        ("*/15 * * * *", "cron(0/15 * * * ? *)"),
        ("1-59/15 * * * *", "cron(1/15 * * * ? *)"),
        ("0 9 * * 0", "cron(0 9 ? * 1 *)"),
        ("0 9 * * 7", "cron(0 9 ? * 1 *)"),
        ("0 9 * * 5-7", "cron(0 9 ? * 1,6,7 *)"),
        ("0 9 * * */2", "cron(0 9 ? * 1,3,5,7 *)"),
        ("0 9 * * sat,sun", "cron(0 9 ? * 1,7 *)"),
        ("0,30 9-17 * * mon-fri", "cron(0,30 9-17 ? * 2-6 *)"),
        ("0 */6 * * *", "cron(0 0/6 * * ? *)"),
        ("0 9 */2 * *", "cron(0 9 1/2 * ? *)"),
        ("0 9 1,15 jan-mar,dec *", "cron(0 9 1,15 1-3,12 ? *)"),
        ("0 9 L * *", "cron(0 9 L * ? *)"),
        ("0 9 * * 1#2", "cron(0 9 ? * 2#2 *)"),
        ("0 9 * * L5", "cron(0 9 ? * 6L *)"),
        ("@daily", "cron(0 0 * * ? *)"),
        ("@weekly", "cron(0 0 ? * 1 *)"),
        ("@yearly", "cron(0 0 1 1 ? *)"),
    ],
)
def test_to_aws_scheduler(spec: str, aws: str) -> None:
    assert CronSchedule.parse(spec).to_aws_scheduler() == (aws, "UTC")


def test_to_aws_scheduler_passes_the_time_zone() -> None:
    cron = CronSchedule.parse("TZ=Europe/Paris 0 9 * * 1-5")
    assert cron.to_aws_scheduler() == ("cron(0 9 ? * 2-6 *)", "Europe/Paris")


def test_to_aws_scheduler_refuses_day_of_month_or_day_of_week() -> None:
    with pytest.raises(CronError) as info:
        CronSchedule.parse("0 9 1 * 1").to_aws_scheduler()
    message = str(info.value)
    assert "day-of-month '1' and day-of-week '1' are both restricted" in message
    assert "EventBridge Scheduler cannot express" in message


def test_to_aws_scheduler_refuses_l_in_a_list() -> None:
    with pytest.raises(CronError, match="'L' in day-of-month only alone"):
        CronSchedule.parse("0 9 1,L * *").to_aws_scheduler()
