"""The CLI never sends a terminal control character it was given to the terminal.

Ids, names, errors and event data come from whoever sent them: each command's answer is
printed with such characters shown as their codes (``\\x1b``), on a terminal (rich) and piped
(plain), and ``--json`` stays valid JSON that gives the exact value back.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

import pytest
from click.testing import CliRunner

from runtime.cli import cli, output
from runtime.cli.output import escape
from runtime.control import Cancelled, RunNotFoundError, Sent

#: Clears the screen, writes "evil" to the clipboard (OSC 52), rings the bell.
HOSTILE = "a\x1b[2J\x1b]52;c;ZXZpbA==\x07b"
#: A carriage return, a C1 CSI, a right-to-left override, a lone surrogate.
ODD = "x\ry\x9b31mz\u202eevil\udc80"
#: What no human-readable answer may hold: any C0 or C1 control but the newline, the
#: bidi controls, lone surrogates. (On a terminal rich adds its own colour codes.)
RAW = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069"
                 "\ud800-\udfff]")
#: The hostile sequences themselves, which are never rich's own.
INJECTED = ("\x1b[2J", "\x1b]52", "\x07", "\r", "\x9b", "\u202e", "\udc80")


class HostileControl:
    """A control plane whose every answer carries hostile text."""

    def list_runs(self, query: Any) -> list[dict[str, Any]]:
        return [{"run_id": HOSTILE, "function_id": ODD, "status": "Failed", "event": HOSTILE,
                 "created_at": "2026-03-02T08:00:00Z", "duration_ms": 5,
                 "waiting": {"message": ODD}}]

    def dead_letter_count(self) -> int:
        return 0

    def run(self, run_id: str) -> dict[str, Any]:
        return {"run_id": HOSTILE, "function_id": ODD, "status": "Completed", "event": ODD,
                "created_at": "2026-03-02T08:00:00Z", "output": {HOSTILE: ODD},
                "waiting": {"message": HOSTILE}, "activity": [{"message": ODD}],
                "error": {"name": HOSTILE, "message": ODD},
                "parent": {"run_id": HOSTILE, "key": ODD},
                "steps": [{"key": HOSTILE, "kind": "run", "status": "Failed", "attempts": 1,
                           "error": {"name": ODD, "message": HOSTILE}}]}

    def events(self, *, limit: int = 50) -> list[dict[str, Any]]:
        return [{"id": HOSTILE, "name": ODD, "ts": 1_700_000_000_000, "data": {HOSTILE: ODD}}]

    def event(self, event_id: str) -> dict[str, Any]:
        return {**self.events()[0], "runs": [{"run_id": HOSTILE, "function_id": ODD,
                                              "status": "Running"}],
                "waits": [{"run_id": ODD, "function_id": HOSTILE, "step": ODD}]}

    def dead_letters(self) -> list[dict[str, Any]]:
        return [{"queue": ODD, "message_id": HOSTILE, "kind": "start", "function_id": ODD,
                 "run_id": HOSTILE, "step": ODD, "receive_count": 1, "error": HOSTILE}]

    def functions(self) -> dict[str, Any]:
        return {"app_id": HOSTILE, "functions": [{"id": ODD, "triggers": [{"event": HOSTILE}],
                                                   "retries": 1, "flow": {ODD: True}}]}

    def send(self, event: dict[str, Any]) -> Sent:
        return Sent([HOSTILE], [ODD])

    def cancel(self, run_id: str) -> Cancelled:
        return Cancelled(False, ODD)

    def rerun(self, run_id: str, from_step: str | None = None) -> str:
        return HOSTILE

    def redrive(self, *, queue: str | None = None, message_id: str | None = None) -> list[str]:
        return [HOSTILE]


class NotFoundControl(HostileControl):
    """A control plane whose error quotes the hostile id."""

    def run(self, run_id: str) -> dict[str, Any]:
        raise RunNotFoundError(f"no run {run_id}")


COMMANDS = [
    ["runs"], ["run", "r"], ["events"], ["event", "e"], ["dlq", "list"], ["functions"],
    ["send", "x/y", "--data", "{}"], ["cancel", HOSTILE], ["rerun", "r"],
]


@pytest.fixture
def control(monkeypatch: pytest.MonkeyPatch) -> Callable[[type[HostileControl]], None]:
    def use(kind: type[HostileControl]) -> None:
        for module in ("runs", "events", "dlq", "functions"):
            monkeypatch.setattr(f"runtime.cli.{module}.control_plane",
                                lambda url, use_aws=False: kind())
    use(HostileControl)
    return use


def invoke(args: list[str]) -> str:
    result = CliRunner().invoke(cli, args)
    assert result.exception is None or isinstance(result.exception, SystemExit), result
    return result.output


def test_escape_shows_controls_by_their_code_and_leaves_the_rest() -> None:
    assert escape(HOSTILE) == "a\\x1b[2J\\x1b]52;c;ZXZpbA==\\x07b"
    assert escape(ODD) == "x\\x0dy\\x9b31mz\\u202eevil\\udc80"
    assert escape("a\nb\tc\x7f\x00\u2066\u2028") == "a\\x0ab\\x09c\\x7f\\x00\\u2066\\u2028"
    plain = "Zoë's 订单 ✓ 👩\u200d💻 C:\\tmp [bold]x[/bold] ü"
    assert escape(plain) == plain
    assert escape(escape(HOSTILE + ODD)) == escape(HOSTILE + ODD)


@pytest.mark.parametrize("args", COMMANDS, ids=lambda a: " ".join(a[:2]))
def test_piped_answers_show_control_characters_escaped(
        control: Callable[[type[HostileControl]], None], args: list[str]) -> None:
    out = invoke(args)
    assert not RAW.search(out), repr(out)
    assert "\\x1b" in out or "\\x0d" in out or "\\u202e" in out, out


@pytest.mark.parametrize("args", COMMANDS[:6], ids=lambda a: " ".join(a[:2]))
def test_answers_on_a_terminal_show_control_characters_escaped(
        control: Callable[[type[HostileControl]], None], args: list[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(output, "is_terminal", lambda stream: True)
    out = invoke(args)
    assert not any(seq in out for seq in INJECTED), repr(out)
    assert "\\x1b" in out or "\\x0d" in out, out


@pytest.mark.parametrize("args", [["runs"], ["run", "r"], ["events"], ["event", "e"],
                                  ["dlq", "list"], ["functions"], ["send", "x/y"],
                                  ["cancel", HOSTILE], ["rerun", "r"]],
                         ids=lambda a: " ".join(a[:2]))
def test_json_answers_stay_valid_ascii_json_with_the_exact_values(
        control: Callable[[type[HostileControl]], None], args: list[str]) -> None:
    out = invoke([*args, "--json"])
    assert out.isascii() and not RAW.search(out), repr(out)
    assert {HOSTILE, ODD} & set(strings(json.loads(out)))


def strings(value: Any) -> list[str]:
    """Every string in a JSON value, keys too."""
    if isinstance(value, dict):
        return [s for k, v in value.items() for s in (k, *strings(v))]
    if isinstance(value, list):
        return [s for v in value for s in strings(v)]
    return [value] if isinstance(value, str) else []


def test_an_error_quoting_a_hostile_id_is_escaped(
        control: Callable[[type[HostileControl]], None]) -> None:
    control(NotFoundControl)
    result = CliRunner().invoke(cli, ["run", HOSTILE])
    assert result.exit_code == 1
    assert "no run a\\x1b[2J" in result.output and not RAW.search(result.output)
