"""A delay queue in the SQLite file, with SQS semantics.

Receiving a message does not remove it: it becomes invisible for the visibility timeout, and
only :meth:`SqliteQueue.delete` (after the handler succeeded) removes it. A worker that dies
mid-message therefore loses nothing — the message reappears once the timeout passes and
another worker takes it. A message received ``max_receives`` times without success is moved
to the dead letters instead of looping for ever.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from runtime.backends.local.database import Database, dumps
from runtime.dlq import DeadLetter, describe_body, redrive_body
from runtime.messages import checked
from runtime.orchestration.protocols import Clock
from runtime.records import Message, TimerCancel

_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS queue (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        msg_id TEXT NOT NULL,
        function_id TEXT NOT NULL,
        body TEXT NOT NULL,
        sent_at REAL NOT NULL,
        visible_at REAL NOT NULL,
        receive_count INTEGER NOT NULL DEFAULT 0,
        lease_until REAL,
        dead INTEGER NOT NULL DEFAULT 0,
        last_error TEXT)""",
    "CREATE INDEX IF NOT EXISTS queue_visible ON queue (dead, visible_at, seq)",
    "CREATE INDEX IF NOT EXISTS queue_msg ON queue (msg_id)",
)


@dataclass(frozen=True)
class Delivery:
    """One receipt of a queued message.

    Attributes:
        seq: The queue row. Each send is its own row, so re-sending a message with the same
            id (a timer hop) while this delivery is in flight never confuses the two.
        receipt: Which receipt this is (the row's receive count when received); a release
            with an outdated receipt — the lease expired and another worker took the message —
            is ignored.
        message: The message.

    """

    seq: int
    receipt: int
    message: Message

    @property
    def receive_count(self) -> int:
        """How many times the message has been received, this time included."""
        return self.receipt


class SqliteQueue:
    """The :class:`~runtime.orchestration.protocols.Queue` over a SQLite table.

    Args:
        path: The database file, or a :class:`Database` shared with the store.
        clock: Time source for due times and leases (a FakeClock in tests).
        visibility_timeout: Seconds a received message stays invisible before redelivery.
        max_receives: Receipts without success before a message is dead-lettered.

    """

    def __init__(
        self,
        path: str | Path | Database,
        *,
        clock: Clock,
        visibility_timeout: float = 300.0,
        max_receives: int = 10,
    ) -> None:
        if visibility_timeout <= 0:
            raise ValueError(f"visibility_timeout must be positive, got {visibility_timeout}")
        if max_receives < 1:
            raise ValueError(f"max_receives must be at least 1, got {max_receives}")
        self.db = path if isinstance(path, Database) else Database(path)
        self.clock = clock
        self.visibility_timeout = visibility_timeout
        self.max_receives = max_receives
        #: Receive visible messages in random order instead of due order (chaos tests).
        self.shuffle = False
        self.db.ensure_schema(_SCHEMA)

    def send(self, messages: Sequence[Message]) -> None:
        """Enqueue messages, each visible from its ``due`` time (or now)."""
        if not messages:
            return
        now = self.clock.now()
        with self.db.write() as conn:
            conn.executemany(
                "INSERT INTO queue (msg_id, function_id, body, sent_at, visible_at)"
                " VALUES (?, ?, ?, ?, ?)",
                [
                    (m.id, m.function_id, dumps(m.to_json()), now,
                     m.due if m.due is not None else now)
                    for m in messages
                ],
            )

    def cancel(self, timers: Sequence[TimerCancel]) -> None:
        """Delete moot timers still waiting in the queue (never one already received)."""
        if not timers:
            return
        with self.db.write() as conn:
            conn.executemany(
                "DELETE FROM queue WHERE msg_id = ? AND receive_count = 0 AND dead = 0",
                [(t.message_id,) for t in timers])

    def pending_timers(self) -> list[str]:
        """Ids of messages queued for later (timers), not yet due or received."""
        now = self.clock.now()
        rows = self.db.connection().execute(
            "SELECT msg_id FROM queue WHERE dead = 0 AND receive_count = 0 AND visible_at > ?"
            " ORDER BY visible_at", (now,)).fetchall()
        return [str(r[0]) for r in rows]

    def receive(self, max_n: int = 1) -> list[Delivery]:
        """Claim up to ``max_n`` visible messages, earliest due first, for one lease each."""
        now = self.clock.now()
        # An idle poll costs a read, not the write lock (other workers are committing).
        if self.db.connection().execute(
            "SELECT 1 FROM queue WHERE dead = 0 AND visible_at <= ? LIMIT 1", (now,)
        ).fetchone() is None:
            return []
        with self.db.write() as conn:
            return self._lease(conn, now, max_n)

    def settle(self, delivery: Delivery, *, receive_next: bool = False) -> Delivery | None:
        """Remove a message whose handling succeeded and, if asked, lease the next one.

        One write: inside the worker's unit (:meth:`Database.unit`) it joins the transaction
        of the message's commit, so the commit, its sends, this ack and the next lease land
        together. The delete is unconditional even if the lease expired meanwhile: the work
        is done, and a copy another worker holds is harmless because handling is idempotent.

        Returns:
            The next delivery (leased exactly as :meth:`receive` would), or ``None``.
        """
        with self.db.write() as conn:
            conn.execute("DELETE FROM queue WHERE seq = ?", (delivery.seq,))
            if not receive_next:
                return None
            batch = self._lease(conn, self.clock.now(), 1)
            return batch[0] if batch else None

    def _lease(self, conn: sqlite3.Connection, now: float, max_n: int) -> list[Delivery]:
        """Lease up to ``max_n`` visible messages, inside the caller's write transaction."""
        order = "random()" if self.shuffle else "visible_at, seq"
        lease = now + self.visibility_timeout
        out: list[Delivery] = []
        while len(out) < max_n:
            # Every row looked at leaves the visible set (leased or dead): this ends.
            rows = conn.execute(
                "SELECT seq, receive_count, body FROM queue WHERE dead = 0 AND visible_at <= ?"
                f" ORDER BY {order} LIMIT ?",
                (now, max_n - len(out)),
            ).fetchall()
            if not rows:
                break
            for seq, count, body in rows:
                if count >= self.max_receives:
                    # Visible after max_receives receipts: its worker died (or its handler
                    # kept failing). Dead-letter it rather than deliver it again.
                    conn.execute(
                        "UPDATE queue SET dead = 1, lease_until = NULL, last_error ="
                        " coalesce(last_error, 'visibility timeout expired') WHERE seq = ?",
                        (seq,),
                    )
                    continue
                try:
                    message = checked(Message.from_json(_loads(body)))
                except (ValueError, TypeError, KeyError) as exc:
                    # An unreadable body would otherwise block the head of the queue for ever.
                    conn.execute(
                        "UPDATE queue SET dead = 1, last_error = ? WHERE seq = ?",
                        (f"unreadable body: {exc}", seq),
                    )
                    continue
                conn.execute(
                    "UPDATE queue SET visible_at = ?, lease_until = ?, receive_count = ?"
                    " WHERE seq = ?",
                    (lease, lease, count + 1, seq),
                )
                out.append(Delivery(seq, count + 1, message))
        return out

    def delete(self, delivery: Delivery) -> None:
        """Remove a message whose handling succeeded (:meth:`settle` without a next lease)."""
        self.settle(delivery)

    def extend(self, deliveries: Sequence[Delivery]) -> None:
        """Renew the leases of deliveries still being handled (a worker's heartbeat)."""
        if not deliveries:
            return
        lease = self.clock.now() + self.visibility_timeout
        with self.db.write() as conn:
            conn.executemany(
                "UPDATE queue SET visible_at = ?, lease_until = ?"
                " WHERE seq = ? AND receive_count = ? AND dead = 0",
                [(lease, lease, d.seq, d.receipt) for d in deliveries],
            )

    def release(self, delivery: Delivery, delay: float = 0.0, error: str | None = None) -> bool:
        """Make a message whose handling failed visible again after ``delay`` seconds.

        Args:
            delivery: The failed receipt.
            delay: Seconds before the retry.
            error: Why it failed, kept with the message for the dead letters.

        Returns:
            Whether the message was dead-lettered (it used up ``max_receives``).

        """
        now = self.clock.now()
        dead = delivery.receipt >= self.max_receives
        with self.db.write() as conn:
            cur = conn.execute(
                "UPDATE queue SET visible_at = ?, lease_until = NULL, dead = ?, last_error = ?"
                " WHERE seq = ? AND receive_count = ? AND dead = 0",
                (now + max(delay, 0.0), int(dead), error, delivery.seq, delivery.receipt),
            )
            return dead and cur.rowcount == 1

    def visible_count(self) -> int:
        """How many messages could be received now."""
        row = self.db.connection().execute(
            "SELECT count(*) FROM queue WHERE dead = 0 AND visible_at <= ?", (self.clock.now(),)
        ).fetchone()
        return int(row[0])

    def next_visible(self, *, after: float) -> float | None:
        """When the next message not yet visible at ``after`` becomes visible, if any."""
        row = self.db.connection().execute(
            "SELECT min(visible_at) FROM queue WHERE dead = 0 AND visible_at > ?", (after,)
        ).fetchone()
        return float(row[0]) if row and row[0] is not None else None

    def pending_count(self) -> int:
        """How many messages are queued and not dead, whether visible, delayed or in flight."""
        row = self.db.connection().execute("SELECT count(*) FROM queue WHERE dead = 0").fetchone()
        return int(row[0])

    def dead_letters(self) -> list[Message]:
        """Dead-lettered messages, oldest first."""
        rows = self.db.connection().execute(
            "SELECT body FROM queue WHERE dead = 1 ORDER BY seq"
        ).fetchall()
        out: list[Message] = []
        for (body,) in rows:
            try:
                out.append(Message.from_json(_loads(body)))
            except (ValueError, TypeError, KeyError):
                continue  # dead because unreadable; inspect the row itself
        return out

    def dead_letter_rows(self) -> list[DeadLetter]:
        """Every dead row, oldest first, unreadable ones included; ``message_id`` is the row."""
        rows = self.db.connection().execute(
            "SELECT seq, function_id, body, sent_at, receive_count, last_error FROM queue"
            " WHERE dead = 1 ORDER BY seq"
        ).fetchall()
        out = []
        for seq, function_id, body, sent_at, count, error in rows:
            kind, fn, run_id, step = describe_body(body)
            out.append(
                DeadLetter(
                    queue=function_id,
                    message_id=str(seq),
                    kind=kind,
                    function_id=fn or function_id,
                    run_id=run_id,
                    step=step,
                    error=error,
                    sent_ts=sent_at,
                    receive_count=count,
                    source=function_id,
                )
            )
        return out

    def dead_count(self) -> int:
        """How many messages are dead-lettered."""
        row = self.db.connection().execute("SELECT count(*) FROM queue WHERE dead = 1").fetchone()
        return int(row[0])

    def redrive(self, *, queue: str | None = None, message_id: str | None = None) -> list[str]:
        """Put dead rows back to work: visible now, receive count reset, marked as re-sent.

        Idempotent: a row is redriven once (it is no longer dead), so repeating the call, or
        racing another, redrives nothing twice. The re-sent mark makes the worker handle the
        message as a redelivery (see :func:`runtime.dlq.redrive_body`).

        Args:
            queue: Only rows of this function's queue.
            message_id: Only this row (as listed by :meth:`dead_letter_rows`).

        Returns:
            The ids of the rows redriven.
        """
        where, params = ["dead = 1"], []
        if queue is not None:
            where.append("function_id = ?")
            params.append(queue)
        if message_id is not None:
            if not message_id.isdigit():
                return []
            where.append("seq = ?")
            params.append(message_id)
        now = self.clock.now()
        with self.db.write() as conn:
            rows = conn.execute(
                f"SELECT seq, body FROM queue WHERE {' AND '.join(where)} ORDER BY seq", params
            ).fetchall()
            conn.executemany(
                "UPDATE queue SET dead = 0, receive_count = 0, visible_at = ?, lease_until = NULL,"
                " last_error = NULL, body = ? WHERE seq = ? AND dead = 1",
                [(now, redrive_body(body), seq) for seq, body in rows],
            )
        return [str(seq) for seq, _ in rows]

    def close(self) -> None:
        """Close this process's connections."""
        self.db.close()


def _loads(body: str) -> dict[str, Any]:
    raw = json.loads(body)
    if not isinstance(raw, dict):
        raise ValueError(f"queue body is not a JSON object: {body[:100]!r}")
    return raw
