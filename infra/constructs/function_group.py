"""A nested stack of functions: how an app of hundreds of functions stays within every limit.

A function adds about a dozen resources (``runtime.deploy_limits``), and a template holds at
most 500; so each function's runtime, rules, schedules, alarms and dashboard live in one of
``FUNCTION_GROUPS`` nested stacks, chosen by a hash of the function's id. The hash, not the
order of registration, decides: adding or removing a function never moves another one to a
different stack, which would fail the deploy (its named queue would be created in the new
stack before the old stack deletes it). What every function shares (the table, bucket, bus,
router, DLQ, timer role, alarm topic) stays in the root stack and reaches a group as a few
parameters. The one reference back is the payload bucket's policy in the root, which lists
each function's role (one output per function of the group).
"""

from __future__ import annotations

import aws_cdk as cdk
from constructs import Construct

from runtime.deploy_limits import FUNCTION_GROUPS


class FunctionGroup(cdk.NestedStack):
    """The nested stack of the functions whose ids hash to ``index``.

    Args:
        scope: The root stack.
        index: The group, 0 to ``FUNCTION_GROUPS - 1``.
        app_id: The app (for the description).

    Attributes:
        index: The group.
    """

    def __init__(self, scope: Construct, *, index: int, app_id: str) -> None:
        super().__init__(
            scope, f"Functions{index:02d}",
            description=f"stepkit app '{app_id}': function group {index} of {FUNCTION_GROUPS}",
        )
        self.index = index
