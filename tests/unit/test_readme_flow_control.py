"""The README's flow-control example runs as written and does what its comments say."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from runtime import App
from runtime.errors import ConfigurationError
from runtime.testing import Harness

README = Path(__file__).resolve().parents[2] / "README.md"


def _example(heading: str) -> str:
    section = README.read_text().split(f"### {heading}\n", 1)[1]
    found = re.search(r"```python\n(.*?)```", section, re.S)
    assert found, f"no python example under '{heading}'"
    return found.group(1)


def test_the_flow_control_example_runs_as_written(tmp_path: Path) -> None:
    scope: dict[str, Any] = {}
    exec(compile(_example("Flow control"), "README.md", "exec"), scope)
    app: App = scope["app"]
    h = Harness.local(app, path=tmp_path / "db.sqlite3")
    h.send("payment/requested", {"payment_id": "p1", "customer_id": "c1"})
    h.send("payment/requested", {"payment_id": "p1", "customer_id": "c1"})
    assert [r.output for r in h.runs("charge-card", "Completed")] == ["charged p1"]
    assert len(h.runs("charge-card", "Skipped")) == 1
    h.send([{"name": "ai/summary.requested", "data": {"user_id": "u", "doc_id": f"d{i}"}}
            for i in range(3)])
    assert len(h.runs("summarize", "Completed")) == 2  # limit 2 per minute: the third waits
    h.advance("1m")
    assert len(h.runs("summarize", "Completed")) == 3
    for version in (1, 2, 3):
        h.send("doc/edited", {"doc_id": "d1", "version": version})
        h.advance("1m")
    assert h.runs("reindex") == []  # still being edited
    h.advance("5m")
    assert [r.output for r in h.runs("reindex")] == [3]
    h.send([{"name": "row/added", "data": {"n": n}} for n in range(150)])
    assert [r.output for r in h.runs("load-rows")] == [100]
    h.advance("10s")
    assert sorted(r.output for r in h.runs("load-rows")) == [50, 100]


def test_the_documented_error_is_the_real_one() -> None:
    app = App("shop")
    with pytest.raises(ConfigurationError) as err:
        app.function(id="summarize", trigger=[], throttle={"limit": 2, "period": "8d"})
    documented = re.search(r"`(function 'summarize': throttle\.period: [^`]*)`",
                           " ".join(README.read_text().split()))
    assert documented and str(err.value).startswith(documented.group(1)), str(err.value)
