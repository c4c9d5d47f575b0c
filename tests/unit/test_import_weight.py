"""A Lambda cold start imports only what the handler uses (issue 10).

Each check runs a fresh interpreter: the handler module, then the example app loaded as the
handler loads it on its first record. Not a timing test: bench/cold_import.py measures.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from runtime.checks import checked_at_deploy
from runtime.cron import CronError, CronSchedule
from runtime.expressions import Expression, ExpressionError

ROOT = Path(__file__).resolve().parents[2]

#: Parsers only registration checks and some evaluations need: celpy (with lark, pendulum and
#: its grammar) for CEL, croniter for cron specs (EventBridge Scheduler fires them on AWS);
#: Powertools' batch package, with its data class (and, when pydantic is loaded, pydantic
#: model) of every event source and asyncio, which the handlers' own SQS loop does without
#: (runtime/handlers/batch.py); difflib, for a registration error's hint. (pydantic itself
#: stays: every replay validates the run's events into ``Event`` models, and the app's
#: options are pydantic models.)
OFF_THE_COLD_START = (
    "celpy", "lark", "pendulum", "croniter", "runtime._cel",
    "aws_lambda_powertools.utilities.parser", "aws_lambda_powertools.utilities.batch",
    "aws_lambda_powertools.utilities.data_classes", "asyncio", "difflib",
)


def _loaded_after(handler: str) -> set[str]:
    probe = (
        f"import sys, json\nimport {handler}\nfrom runtime.discovery import load_app\n"
        "load_app(deployed=True)\nprint(json.dumps(sorted(sys.modules)))"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, check=True, capture_output=True, text=True
    ).stdout
    return set(json.loads(out))


@pytest.mark.parametrize("handler", ["runtime.handlers.worker", "runtime.handlers.router",
                                     "runtime.handlers.ingress"])
def test_handler_and_its_app_leave_the_parsers_unloaded(handler: str) -> None:
    loaded = _loaded_after(handler)
    assert "functions.orders" in loaded  # the app was loaded: it has CEL and a cron trigger
    off = {m for m in loaded for o in OFF_THE_COLD_START if m == o or m.startswith(f"{o}.")}
    assert off == set()


_DESCRIBE = """
import json
from runtime.discovery import load_app
app = load_app(deployed={deployed})
print(json.dumps([
    [fn.id, [[f.event, f.condition and f.condition.source] for f in fn.events],
     [[c.spec, c.expression, c.tz] for c in fn.crons], repr(fn.cancel_on), fn.retries,
     repr(fn.flow), repr(fn.aws), str(fn.start_timeout), str(fn.finish_timeout)]
    for fn in app
]))
"""


def test_importing_runtime_imports_no_public_module_until_a_name_is_used() -> None:
    probe = (
        "import sys, runtime\nbefore = 'pydantic' in sys.modules\n"
        "from runtime import App, Context, Throttle\n"
        "print(before, 'pydantic' in sys.modules, App.__module__, Throttle.__module__)"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, check=True, capture_output=True, text=True
    ).stdout.split()
    assert out == ["False", "True", "runtime.app", "runtime.flow"]


def test_a_deployed_app_is_the_checked_app() -> None:
    described = [
        subprocess.run(
            [sys.executable, "-c", _DESCRIBE.format(deployed=deployed)],
            cwd=ROOT, check=True, capture_output=True, text=True,
        ).stdout
        for deployed in (False, True)
    ]
    assert json.loads(described[0]) and described[0] == described[1]


def test_deferred_expression_is_parsed_on_first_evaluation() -> None:
    with pytest.raises(ExpressionError, match="syntax error"):
        Expression.compile("event.data.x ==", where="w")
    with checked_at_deploy():
        bad = Expression.compile("event.data.x ==", where="w")
        good = Expression.compile("event.data.x == 1", where="w")
    assert good.matches(event={"data": {"x": 1}}) is True
    with pytest.raises(ExpressionError, match="w: invalid CEL expression"):
        bad.matches(event={})


def test_deferred_cron_keeps_its_shape_check_and_parses_on_first_use() -> None:
    with pytest.raises(CronError, match="bad hour"):
        CronSchedule.parse("0 25 * * *")
    with checked_at_deploy():
        with pytest.raises(CronError, match="expected 5"):
            CronSchedule.parse("0 9 * *")
        cron = CronSchedule.parse("TZ=Europe/London 0 8 * * *")
    assert cron == CronSchedule.parse("TZ=Europe/London 0 8 * * *")
