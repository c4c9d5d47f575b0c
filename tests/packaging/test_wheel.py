"""A wheel built from the project installs, and its harness runs, without the emulators' moto.

The emulator plumbing (moto, DynamoDB Local, the AWS test driver) is ``stepkit_emulators``,
behind the ``emulators`` extra; ``runtime`` never imports it, so a user who installs stepkit
without the extra gets a ``runtime.testing.Harness`` that imports and runs.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

#: Run in the fresh environment: a local harness scenario in normal and chaos mode, then what
#: is importable there and what the scenario loaded.
_SCENARIO = """
import importlib.util, json, sys
from runtime import App, Context, TriggerEvent
from runtime.testing import Harness

app = App("wheel")

@app.function(id="greet", trigger=TriggerEvent("user/signup"))
def greet(ctx: Context) -> str:
    name = ctx.step.run("name", lambda: ctx.event.data["user_id"].title())
    ctx.step.sleep("nap", "1d")
    return f"hello {name}"

outputs = []
for mode, path in (("normal", sys.argv[1]), ("chaos", sys.argv[2])):
    h = Harness.local(app, path=path)
    if mode == "chaos":
        h.enable_chaos()
    h.send("user/signup", {"user_id": "ada"})
    h.advance("1d")
    outputs.append(h.only_run("greet").output)
    h.close()
loaded = sorted(m for m in sys.modules if m.split(".")[0] in {"stepkit_emulators", "moto"})
try:
    Harness.aws(app, None)
    aws_error = None
except ModuleNotFoundError as e:
    aws_error = str(e)
print(json.dumps({
    "outputs": outputs,
    "moto_importable": importlib.util.find_spec("moto") is not None,
    "emulators_loaded": loaded,
    "runtime_from": __import__("runtime").__file__,
    "aws_error": aws_error,
}))
"""


def _uv() -> list[str]:
    if exe := shutil.which("uv"):
        return [exe]
    if importlib.util.find_spec("uv") is not None:
        return [sys.executable, "-m", "uv"]
    pytest.fail("uv is needed to build the wheel; run scripts/setup.sh", pytrace=False)


def _run(*argv: str, cwd: Path = ROOT) -> str:
    done = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, check=False)
    assert done.returncode == 0, f"{' '.join(argv)}\n{done.stdout}\n{done.stderr}"
    return done.stdout


def test_the_wheel_runs_the_harness_without_moto(tmp_path: Path) -> None:
    uv = _uv()
    _run(*uv, "build", "--wheel", "--quiet", "--out-dir", str(tmp_path / "dist"))
    (wheel,) = (tmp_path / "dist").glob("stepkit-*.whl")
    # The locked versions of the core dependencies (no dev group, no extras): what uv's cache
    # holds already, and what every other test ran with.
    pins = tmp_path / "pins.txt"
    pins.write_text(_run(*uv, "export", "--frozen", "--no-dev", "--no-hashes",
                         "--no-emit-project", "--quiet"))
    venv = tmp_path / "venv"
    python = venv / "bin" / "python"
    _run(*uv, "venv", "--quiet", "--python", sys.executable, str(venv))
    _run(*uv, "pip", "install", "--quiet", "--python", str(python), "-c", str(pins), str(wheel))

    # Run outside the checkout, so `runtime` can only come from the installed wheel.
    out = _run(str(python), "-I", "-c", _SCENARIO, str(tmp_path / "normal.sqlite3"),
               str(tmp_path / "chaos.sqlite3"), cwd=tmp_path)
    found = json.loads(out.splitlines()[-1])
    assert found["outputs"] == ["hello Ada", "hello Ada"]
    assert found["moto_importable"] is False
    assert found["emulators_loaded"] == []
    assert Path(found["runtime_from"]).is_relative_to(venv)
    assert "pip install 'stepkit[emulators]'" in found["aws_error"]
