"""The schedule census against moto's Scheduler: it counts the app's group, stops at its cap,
publishes one EMF line, and publishes nothing when ListSchedules keeps refusing."""

from __future__ import annotations

import json
from types import SimpleNamespace
from typing import Any

import pytest
from botocore.exceptions import ClientError

from runtime.backends.aws import census
from runtime.handlers import census as census_handler
from stepkit_emulators.emulators import AwsEmulators

pytestmark = pytest.mark.aws

GROUP = "shop-schedules"


def make_schedules(scheduler: Any, group: str, n: int) -> None:
    for i in range(n):
        scheduler.create_schedule(
            Name=f"t{i:04d}-1900000000", GroupName=group,
            ScheduleExpression="at(2030-03-17T12:00:00)", ScheduleExpressionTimezone="UTC",
            FlexibleTimeWindow={"Mode": "OFF"}, ActionAfterCompletion="DELETE",
            Target={"Arn": "arn:aws:sqs:us-east-1:123456789012:q",
                    "RoleArn": "arn:aws:iam::123456789012:role/r", "Input": "{}"})


@pytest.fixture
def scheduler(aws: AwsEmulators) -> Any:
    client = aws.client("scheduler")
    client.create_schedule_group(Name=GROUP)
    client.create_schedule_group(Name="other-app-schedules")
    make_schedules(client, GROUP, 250)
    make_schedules(client, "other-app-schedules", 30)  # another app's: not counted
    return client


class Calls:
    """The real client, counting ListSchedules calls; optionally refusing them all."""

    def __init__(self, client: Any, *, refuse: str | None = None) -> None:
        self.client, self.refuse, self.calls = client, refuse, 0

    def list_schedules(self, **request: Any) -> dict[str, Any]:
        self.calls += 1
        assert request["MaxResults"] == census.PAGE_SIZE
        if self.refuse:
            raise ClientError({"Error": {"Code": self.refuse, "Message": "slow down"}},
                              "ListSchedules")
        return dict(self.client.list_schedules(**request))


def test_it_counts_every_schedule_of_the_group_and_only_those(scheduler: Any) -> None:
    calls = Calls(scheduler)
    found = census.count_schedules(calls, GROUP, pace_s=0)
    assert found == census.Census(count=250, capped=False, pages=3)  # 100 + 100 + 50
    assert calls.calls == 3


def test_the_cap_stops_the_count_after_cap_over_100_pages(scheduler: Any) -> None:
    calls = Calls(scheduler)
    found = census.count_schedules(calls, GROUP, cap=200, pace_s=0)
    assert found == census.Census(count=200, capped=True, pages=2)
    assert calls.calls == 2  # a third page exists, and is never asked for


def test_running_out_of_time_is_no_count(scheduler: Any) -> None:
    left = iter([60.0, 5.0])
    with pytest.raises(census.CensusError, match="out of time after 1 pages"):
        census.count_schedules(scheduler, GROUP, time_left=lambda: next(left), pace_s=0)


def emf_lines(out: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in out.splitlines() if line.startswith('{"_aws"')]


def test_the_handler_publishes_the_count_as_one_emf_metric(
    scheduler: Any, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv(census.ENV_SCHEDULE_GROUP, GROUP)
    monkeypatch.setenv("STEPKIT_APP", "shop")
    monkeypatch.setattr(census_handler, "_client", scheduler)
    context = SimpleNamespace(get_remaining_time_in_millis=lambda: 900_000)
    assert census_handler.handler({}, context) == {
        "published": True, "schedules": 250, "capped": False, "pages": 3}
    (doc,) = emf_lines(capsys.readouterr().out)
    (directive,) = doc["_aws"]["CloudWatchMetrics"]
    assert directive["Namespace"] == "stepkit"
    assert directive["Dimensions"] == [["service"]]
    assert directive["Metrics"] == [{"Name": "Schedules", "Unit": "Count"}]
    # Powertools prints a metric's values as a list (EMF allows one or many).
    assert (doc["service"], doc["Schedules"], doc.get("capped")) == ("shop", [250.0], None)


def test_a_capped_census_says_so(capsys: pytest.CaptureFixture[str]) -> None:
    census_handler.publish(census.Census(count=census.CAP, capped=True, pages=10_000),
                           service="shop")
    (doc,) = emf_lines(capsys.readouterr().out)
    assert (doc["Schedules"], doc["capped"]) == ([census.CAP], True)


def test_a_throttled_census_publishes_nothing_rather_than_a_false_count(
    scheduler: Any, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setenv(census.ENV_SCHEDULE_GROUP, GROUP)
    monkeypatch.setenv("STEPKIT_APP", "shop")
    refusing = Calls(scheduler, refuse="ThrottlingException")
    monkeypatch.setattr(census_handler, "_client", refusing)
    assert census_handler.handler({}, None) == {"published": False}
    assert refusing.calls == 1
    assert emf_lines(capsys.readouterr().out) == []
    assert "ThrottlingException" in caplog.text and "nothing published" in caplog.text
