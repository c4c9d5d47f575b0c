"""Read a deployed app's runs from DynamoDB for the CLI (``stepkit runs|run|send --aws``)."""

from __future__ import annotations

from typing import Any

import click

from runtime.client import Deployment, send
from runtime.core.protocols import RunQuery
from runtime.devserver.views import run_detail, run_summary
from runtime.records import RunStatus


class AwsClient:
    """The CLI's data source for a deployed app: same methods and JSON as the dev client."""

    def __init__(self, deployment: Deployment | None = None, *, clients: Any = None) -> None:
        from runtime.backends.aws.store import DynamoStore

        self.deployment = deployment or Deployment.resolve()
        self._events = clients["events"] if clients else None
        self.store = DynamoStore(
            self.deployment.table, client=clients["dynamodb"] if clients else None
        )

    def send(self, events: dict[str, Any] | list[dict[str, Any]]) -> list[str]:
        """Send events to the deployed bus."""
        d = self.deployment
        return send(events, app_id=d.app_id, bus=d.bus, client=self._events)

    def runs(
        self, *, function_id: str | None = None, status: str | None = None, limit: int = 20
    ) -> list[dict[str, Any]]:
        """Runs, newest first."""
        query = RunQuery(
            function_id=function_id,
            status=RunStatus(status.capitalize()) if status else None,
            limit=limit,
        )
        return [run_summary(r) for r in self.store.list_runs(query)]

    def run(self, run_id: str) -> dict[str, Any]:
        """One run with its step timeline."""
        state = self.store.load(run_id)
        if state is None:
            raise click.ClickException(f"no run '{run_id}' in table {self.deployment.table}")
        return run_detail(state)
