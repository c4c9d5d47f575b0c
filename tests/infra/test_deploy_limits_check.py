"""`stepkit check` warns before an app approaches an AWS deploy limit, and fails past one."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from runtime.cli.review import Finding, check_project
from runtime.deploy_limits import MAX_RESOURCES, function_group


def _ours(name: str) -> bool:
    return name == "functions" or name.startswith("functions.")


def _function(fid: str, trigger: str) -> str:
    name = fid.replace("-", "_")
    return (f'@app.function(id="{fid}", trigger={trigger}, retries=1)\n'
            f"def {name}(ctx: Context) -> None:\n    return None\n\n\n")


@pytest.fixture
def write_app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
              ) -> Iterator[Callable[[list[tuple[str, str]]], Path]]:
    """Writes a `functions` package of the given (id, trigger) functions, generated."""
    monkeypatch.setattr(sys, "path", list(sys.path))
    saved = {m: sys.modules.pop(m) for m in [m for m in sys.modules if _ours(m)]}

    def write(functions: list[tuple[str, str]]) -> Path:
        for m in [m for m in sys.modules if _ours(m)]:  # a fresh package each time
            del sys.modules[m]
        root = tmp_path / f"project{len(list(tmp_path.iterdir()))}"
        pkg = root / "functions"
        pkg.mkdir(parents=True)
        (pkg / "__init__.py").write_text(
            "from runtime import App, Context, TriggerCron, TriggerEvent\n\n"
            'app = App("bigshop")\n\n\n'
            + "".join(_function(fid, trigger) for fid, trigger in functions))
        return root

    yield write
    for m in [m for m in sys.modules if _ours(m)]:
        del sys.modules[m]
    sys.modules.update(saved)


def _limits(found: list[Finding]) -> list[tuple[str, str]]:
    return [(f.severity, f.message) for f in found if f.rule == "deploy-limit"]


def _in_group_zero(count: int) -> list[tuple[str, str]]:
    ids = (f"order-step-{i:04d}" for i in range(10_000))
    chosen = [fid for fid in ids if function_group(fid) == 0][:count]
    return [(fid, f'TriggerEvent("shop/{fid}")') for fid in chosen]


def test_an_app_of_200_functions_is_not_near_any_limit(write_app: Callable) -> None:
    functions = [(f"handle-order-event-number-{i:03d}", f'TriggerEvent("shop/o.{i:03d}")')
                 for i in range(150)]
    functions += [(f"nightly-report-job-{i:03d}", f'TriggerCron("{i % 60} 3 * * *")')
                  for i in range(50)]
    assert _limits(check_project(write_app(functions))) == []


def test_a_crowded_function_group_warns_from_80_percent_of_the_resource_limit(
    write_app: Callable,
) -> None:
    # 31 event-triggered functions in one nested stack: 31 x 13 + 2 = 405 of 500 resources.
    found = _limits(check_project(write_app(_in_group_zero(31))))
    assert found == [("warning", "CloudFormation resources per template: 405 of "
                      f"{MAX_RESOURCES} (81%) in nested stack of function group 0 "
                      "(31 functions)")]
    assert _limits(check_project(write_app(_in_group_zero(30)))) == []  # 392: 78 %


def test_an_app_past_a_limit_is_an_error_that_fails_the_check(write_app: Callable) -> None:
    found = _limits(check_project(write_app(_in_group_zero(39))))
    assert found == [("error", "CloudFormation resources per template: 509 of "
                      f"{MAX_RESOURCES} (102%) in nested stack of function group 0 "
                      "(39 functions); the deploy would fail")]
