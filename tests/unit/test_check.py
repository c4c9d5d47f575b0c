"""`stepkit check`: findings with severity, file, line and fix; exit 1 on errors."""

from __future__ import annotations

import json
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from runtime.cli import cli
from runtime.cli.review import check_project

BAD = '''
import httpx

from runtime import App, Context, TriggerEvent

app = App("shop")


@app.function(id="charge-customer", trigger=TriggerEvent("order/paid"))
def charge(ctx: Context) -> None:
    ctx.step.run("step1", lambda: httpx.post("https://pay.example/charge"))
    ctx.step.sleep("Cool_Down", 5000)
    ctx.step.wait_for_event("wait-receipt", event="receipt/sent")


@app.function(id="quiet", trigger=TriggerEvent("a/b"), retries=2,  # stepkit: ignore[concurrency]
              concurrency=None)
def quiet(ctx: Context) -> None:
    ctx.step.run("fetch-page", lambda: httpx.get("https://example.com"))
'''


def _ours(name: str) -> bool:
    return name == "functions" or name.startswith("functions.")


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    pkg = tmp_path / "functions"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "shop.py").write_text(textwrap.dedent(BAD))
    monkeypatch.setattr(sys, "path", list(sys.path))
    saved = {m: sys.modules.pop(m) for m in [m for m in sys.modules if _ours(m)]}
    yield tmp_path
    for m in [m for m in sys.modules if _ours(m)]:  # the project's, imported by the test
        del sys.modules[m]
    sys.modules.update(saved)


def test_findings_name_rule_file_line_and_fix(project: Path) -> None:
    found = [(f.severity, f.rule, f.file, f.line, f.function) for f in check_project(project)]
    assert found == [
        ("error", "idempotency", "functions/shop.py", 9, "charge-customer"),
        ("error", "wait-timeout", "functions/shop.py", 13, "charge-customer"),
        ("warning", "concurrency", "functions/shop.py", 9, "charge-customer"),
        ("warning", "step-id", "functions/shop.py", 11, "charge-customer"),
        ("warning", "sleep-number", "functions/shop.py", 12, "charge-customer"),
        ("warning", "step-id", "functions/shop.py", 12, "charge-customer"),
        ("info", "retries", "functions/shop.py", 9, "charge-customer"),
    ]  # 'quiet' sets its retries and ignores the concurrency rule on its decorator line
    [wait] = [f for f in check_project(project) if f.rule == "wait-timeout"]
    assert "waits forever" in wait.message and 'timeout="7d"' in wait.fix


def test_the_command_prints_findings_and_fails_on_errors(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(project)
    result = CliRunner().invoke(cli, ["check"])
    assert result.exit_code == 1
    assert ("functions/shop.py:13: error [wait-timeout] wait_for_event 'wait-receipt' has no "
            "timeout") in result.output
    assert "    fix: add timeout=" in result.output
    assert result.output.rstrip().endswith("2 error, 4 warning, 1 info")
    as_json = CliRunner().invoke(cli, ["check", "--json"])
    assert as_json.exit_code == 1
    assert {f["rule"] for f in json.loads(as_json.output)} >= {"idempotency", "wait-timeout"}


def test_an_app_that_does_not_load_is_critical(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (project / "functions" / "dup.py").write_text(textwrap.dedent('''
        from functions.shop import app
        from runtime import Context, TriggerEvent

        @app.function(id="quiet", trigger=TriggerEvent("x/y"))
        def again(ctx: Context) -> None:
            return None
    '''))
    [finding] = check_project(project)
    assert (finding.severity, finding.rule, finding.file) == ("critical", "loads", "functions")
    assert "function id 'quiet' is already registered" in finding.message


def test_the_example_app_has_no_errors() -> None:
    repo = Path(__file__).resolve().parents[2]
    assert [f for f in check_project(repo) if f.severity in ("critical", "error")] == []
