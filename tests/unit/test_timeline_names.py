"""Which event names the timeline keeps (runtime/orchestration/timeline.py)."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from runtime import App, CancelOn, TriggerEvent
from runtime.orchestration.timeline import keeps, waited_names

FINISHED, FAILED = "stepkit/function.finished", "stepkit/function.failed"


@pytest.fixture
def module(tmp_path: Path) -> Iterator[Any]:
    """Load a handler module written from source (its source is what the timeline reads)."""
    made: list[str] = []

    def load(name: str, source: str) -> Any:
        path = tmp_path / f"{name}.py"
        path.write_text(source)
        spec = importlib.util.spec_from_file_location(name, path)
        assert spec is not None and spec.loader is not None
        mod = importlib.util.module_from_spec(spec)
        sys.modules[name] = mod
        made.append(name)
        spec.loader.exec_module(mod)
        return mod

    yield load
    for name in made:
        sys.modules.pop(name, None)


def _app(*handlers: Any, cancel_on: tuple[CancelOn, ...] = ()) -> App:
    app = App("a")
    for i, handler in enumerate(handlers):
        app.function(id=f"f{i}", trigger=TriggerEvent("x/y"), cancel_on=cancel_on)(handler)
    return app


def test_user_names_are_always_kept_system_names_only_when_named(module: Any) -> None:
    plain = module("tl_plain", "def h(ctx):\n    return 1\n")
    app = _app(plain.h)
    assert keeps(app, "order/created")  # a wait's name may be computed at run time
    assert not keeps(app, FINISHED)
    assert not keeps(app, FAILED)


def test_a_literal_wait_keeps_that_system_name(module: Any) -> None:
    waits = module("tl_waits", (
        "def h(ctx):\n"
        "    ctx.step.wait_for_event('w', event='stepkit/function.finished', timeout='1h')\n"
        "    ctx.step.wait_for_event('v', event='order/paid', timeout='1h')\n"))
    assert waited_names("tl_waits") == {FINISHED, "order/paid"}
    app = _app(waits.h)
    assert keeps(app, FINISHED) and not keeps(app, FAILED)


def test_a_cancel_on_keeps_its_system_name(module: Any) -> None:
    plain = module("tl_plain2", "def h(ctx):\n    return 1\n")
    app = _app(plain.h, cancel_on=(CancelOn(event=FAILED),))
    assert keeps(app, FAILED) and not keeps(app, FINISHED)


@pytest.mark.parametrize("call", [
    "ctx.step.wait_for_event('w', event=NAME, timeout='1h')",
    "ctx.step.wait_for_event('w', event=ctx.event.data['n'], timeout='1h')",
])
def test_a_wait_on_a_name_not_written_out_keeps_every_system_name(module: Any,
                                                                   call: str) -> None:
    mod = module("tl_dynamic", f"NAME = 'stepkit/function.failed'\ndef h(ctx):\n    {call}\n")
    assert waited_names("tl_dynamic") is None
    app = _app(mod.h)
    assert keeps(app, FINISHED) and keeps(app, FAILED)


def test_a_handler_without_readable_source_keeps_every_system_name() -> None:
    namespace: dict[str, Any] = {"__name__": "tl_nowhere"}
    exec("def h(ctx):\n    return 1\n", namespace)  # a module with no file
    assert waited_names("tl_nowhere") is None
    assert keeps(_app(namespace["h"]), FINISHED)


def test_a_wait_in_a_helper_the_handler_calls_keeps_its_system_name(module: Any) -> None:
    # The handler's own module has no wait; the helper of its package it imports does.
    helper = module("tlpkg.helpers", (
        "def wait_finished(ctx):\n"
        "    return ctx.step.wait_for_event('w', event='stepkit/function.finished',"
        " timeout='1h')\n"))
    handlers = module("tlpkg.handlers", (
        "from tlpkg.helpers import wait_finished\n"
        "def h(ctx):\n"
        "    return wait_finished(ctx)\n"))
    assert helper.wait_finished and waited_names("tlpkg.handlers") == set()
    app = _app(handlers.h)
    assert keeps(app, FINISHED) and not keeps(app, FAILED)
