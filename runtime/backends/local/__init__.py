"""The embedded backend: SQLite (WAL) store and queue, in-process event bus."""

from runtime.backends.local.backend import LocalBackend
from runtime.backends.local.database import Database
from runtime.backends.local.queue import Delivery, SqliteQueue
from runtime.backends.local.store import SqliteStore

__all__ = ["Database", "Delivery", "LocalBackend", "SqliteQueue", "SqliteStore"]
