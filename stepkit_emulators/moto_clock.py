"""Make an in-process moto server follow a test's fake clock.

moto's SQS model decides everything time-related by calling two helpers it imports by
name from ``moto.core.utils`` into ``moto.sqs.models``:

* ``unix_time_millis()`` - ``Message.mark_sent`` (``SentTimestamp``), ``Message.delay``
  (``delayed_until``), ``Message.delayed``, ``Message.mark_received``
  (``ApproximateFirstReceiveTimestamp``), ``Message.change_visibility`` (``visible_at``),
  ``Message.visible`` and the 12 h cap in ``change_message_visibility``;
* ``unix_time()`` - the long-poll deadline in ``receive_message``, the retention check
  (``MessageRetentionPeriod`` against ``SentTimestamp``), queue timestamps and
  ``PurgeQueue``'s 60 s rule.

Both ultimately read ``datetime.datetime.now(UTC)``. Rebinding those two names *in
``moto.sqs.models``* (and the same names in ``moto.events.models``, which stamps the
EventBridge event ``time``) to a function of our clock makes delays, visibility timeouts,
redrive-after-timeout and timestamps follow the fake clock, while nothing else in the
process (botocore signing, urllib3, pytest-timeout, DynamoDB Local) is affected.

This only works when moto runs in *this* process (``ThreadedMotoServer`` or
``mock_aws``), not for a ``moto_server`` subprocess.
"""

from __future__ import annotations

import importlib
import threading
import time
from collections.abc import Callable
from types import ModuleType, TracebackType
from typing import Any

#: (module, attribute) pairs rebound while a :class:`MotoClock` is installed.
PATCH_TARGETS: tuple[tuple[str, str], ...] = (
    ("moto.sqs.models", "unix_time"),
    ("moto.sqs.models", "unix_time_millis"),
    ("moto.events.models", "unix_time"),
    ("moto.events.models", "unix_time_millis"),
)


class MotoClockError(RuntimeError):
    """moto no longer looks the way this patch expects (check after upgrading moto)."""


class MotoClock:
    """A clock that moto's SQS and EventBridge models read instead of the wall clock.

    Two modes:

    * **offset mode** (``source=None``, the default): ``now() = time.time() + offset``.
      The clock keeps ticking in real time and :meth:`advance` jumps it forward. This is
      the safe choice: SQS long polls (``WaitTimeSeconds > 0``) still end on time.
    * **source mode** (``MotoClock(source)`` or :meth:`follow`): ``now() = source()``, e.g.
      the harness's own fake clock as epoch seconds (``lambda: fake.now().timestamp()``).
      It may start anywhere (a fixed date in the past is fine: sends, delays, visibility
      and retention are all measured on the same clock). If that source is frozen, an SQS
      long poll on an empty queue never returns (moto loops, waking every second, until
      ``unix_time()`` passes its deadline), so receive with ``WaitTimeSeconds=0`` there.

    Use as a context manager, or call :meth:`install` / :meth:`uninstall`. Installing is
    process-wide (it rebinds module attributes) and not re-entrant: one clock at a time.
    """

    _installed: MotoClock | None = None
    _install_lock = threading.Lock()

    def __init__(self, source: Callable[[], float] | None = None) -> None:
        self._source = source
        self._offset = 0.0
        self._lock = threading.Lock()
        self._saved: list[tuple[ModuleType, str, Any]] = []

    @classmethod
    def installed(cls) -> MotoClock | None:
        """Return the clock moto currently reads, if any."""
        return cls._installed

    # -- reading and moving the clock ---------------------------------------------------
    def now(self) -> float:
        """Return the current fake time in epoch seconds."""
        if self._source is not None:
            return float(self._source())
        return time.time() + self._offset

    @property
    def offset(self) -> float:
        """Seconds this clock is ahead of the wall clock (offset mode)."""
        return self._offset

    def advance(self, seconds: float) -> None:
        """Jump the clock forward by ``seconds`` (offset mode only).

        In source mode, move the source clock instead; moto reads it on every call.
        """
        if self._source is not None:
            raise MotoClockError("advance() is for offset mode; move the source clock instead")
        if seconds < 0:
            raise ValueError("a clock only moves forward")
        with self._lock:
            self._offset += seconds

    def follow(self, source: Callable[[], float] | None) -> None:
        """Switch to source mode reading ``source`` (epoch seconds), or back with ``None``.

        Works while installed, so session-wide emulators can follow each test's fake clock.
        Only switch between tests (after a moto reset): jumping the clock backwards would
        re-delay in-flight messages.
        """
        with self._lock:
            self._source = source
            self._offset = 0.0

    def reset(self) -> None:
        """Back to the wall clock: offset mode, offset 0 (same caveat as :meth:`follow`)."""
        self.follow(None)

    def _unix_time(self, dt: Any = None) -> float:
        if dt is not None:  # moto sometimes converts a given datetime; keep that exact
            return float(_ORIGINALS["unix_time"](dt))
        return self.now()

    def _unix_time_millis(self, dt: Any = None) -> float:
        if dt is not None:
            return float(_ORIGINALS["unix_time_millis"](dt))
        return self.now() * 1000.0

    # -- patching ---------------------------------------------------------------------------
    def install(self) -> None:
        """Rebind moto's time helpers to this clock. Raises if another clock is installed."""
        with MotoClock._install_lock:
            if MotoClock._installed is not None:
                raise MotoClockError("another MotoClock is already installed")
            replacements = {
                "unix_time": self._unix_time,
                "unix_time_millis": self._unix_time_millis,
            }
            saved: list[tuple[ModuleType, str, Any]] = []
            for module_name, attr in PATCH_TARGETS:
                module = importlib.import_module(module_name)
                if not hasattr(module, attr):
                    raise MotoClockError(
                        f"{module_name}.{attr} is gone: moto changed how it reads time; "
                        "re-read moto/sqs/models.py and update stepkit_emulators/moto_clock.py"
                    )
                saved.append((module, attr, getattr(module, attr)))
            for module, attr, _ in saved:
                setattr(module, attr, replacements[attr])
            # moto makes a message visible only once the time is *past* its visible_at: on a
            # frozen clock a visibility timeout of 0 would never end (real SQS: at once).
            sqs_message = importlib.import_module("moto.sqs.models").Message
            saved.append((sqs_message, "visible", sqs_message.__dict__["visible"]))
            sqs_message.visible = property(
                lambda m: bool(self._unix_time_millis() >= m.visible_at)
            )
            self._saved = saved
            MotoClock._installed = self

    def uninstall(self) -> None:
        """Restore moto's original time helpers (no-op if this clock is not installed)."""
        with MotoClock._install_lock:
            if MotoClock._installed is not self:
                return
            for module, attr, original in reversed(self._saved):
                setattr(module, attr, original)
            self._saved = []
            MotoClock._installed = None

    def __enter__(self) -> MotoClock:
        self.install()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.uninstall()


def _load_originals() -> dict[str, Callable[..., float]]:
    from moto.core import utils

    return {"unix_time": utils.unix_time, "unix_time_millis": utils.unix_time_millis}


_ORIGINALS: dict[str, Callable[..., float]] = _load_originals()
