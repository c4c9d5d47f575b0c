"""The AWS size and count limits an app's deployment must stay within, and how stepkit does.

Pure data and arithmetic, shared by the CDK app (``infra/``: how functions are grouped into
nested stacks, how the send-to-every-queue grant is split into managed policies), its limit
test and ``stepkit check`` (which warns before an app approaches one). ARCHITECTURE.md,
"Deploy limits", cites where each number is documented.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass

# -- the limits -----------------------------------------------------------------------------
#: CloudFormation, per template (root and each nested stack alike).
MAX_RESOURCES = 500
MAX_OUTPUTS = 200
MAX_PARAMETERS = 200
MAX_MAPPINGS = 200
#: A template uploaded to S3 (the CDK CLI uploads every template over 50 KiB, and nested
#: templates always); 51,200 bytes is the limit of a template passed inline.
MAX_TEMPLATE_BYTES = 1_000_000
#: SQS, per queue policy.
MAX_QUEUE_POLICY_STATEMENTS = 20
MAX_QUEUE_POLICY_BYTES = 8_192
#: IAM: the inline policies of one role together, one managed policy (whitespace not
#: counted), and managed policies attached to one role (default quota; 20 at most).
MAX_ROLE_INLINE_POLICY_BYTES = 10_240
MAX_MANAGED_POLICY_BYTES = 6_144
MAX_MANAGED_POLICIES_PER_ROLE = 10
#: IAM roles per account (default quota), shared by everything in the account.
MAX_ROLES_PER_ACCOUNT = 1_000
#: EventBridge: rules per event bus (default quota; 100 in af-south-1 and eu-south-1),
#: targets per rule.
MAX_RULES_PER_BUS = 300
MAX_TARGETS_PER_RULE = 5
#: CloudWatch: widgets per dashboard.
MAX_DASHBOARD_WIDGETS = 500
#: ``stepkit check`` warns from this share of a limit.
WARN_AT = 0.8

# -- the design -----------------------------------------------------------------------------
#: Functions live in this many nested stacks, by a hash of their id: adding or removing a
#: function never moves another one between stacks (a named queue moved to another stack
#: fails the deploy: the new stack creates it before the old one deletes it).
FUNCTION_GROUPS = 16
#: Resources one function adds to its group's template: queue, DLQ, their two policies, log
#: group, role, its policy, Lambda, event source mapping and two alarms (DLQ, backlog age;
#: failed runs and pushback are alarmed once per app, in the root); a trigger rule and its
#: alarm with event triggers; a role, its policy and one schedule per cron trigger with cron
#: triggers.
RESOURCES_PER_FUNCTION = 11
RESOURCES_PER_EVENT_TRIGGER = 2
RESOURCES_PER_CRON_FUNCTION = 2
RESOURCES_PER_CRON_TRIGGER = 1
#: A group's own resources: its dashboard and the policy letting its Lambdas set timers.
RESOURCES_PER_GROUP = 2
#: Roles of the root stack: router, run reaper, timer delivery, CDK's bucket emptier, the
#: schedule census and the role Scheduler invokes it with, and the event endpoint's when it
#: is deployed (``stepkit:eventApi``: counted always, since the check cannot see context).
ROOT_ROLES = 7
#: Bytes one queue ARN takes in a policy at worst (``arn:aws-us-gov:sqs:<14-character
#: region>:<account>:`` plus the name, quotes and a comma).
_ARN_BYTES = len('"arn:aws-us-gov:sqs:ap-southeast-2:123456789012:",')
#: A managed policy's document around its resource list.
_POLICY_OVERHEAD = 200


def function_group(function_id: str) -> int:
    """The nested stack (0 to ``FUNCTION_GROUPS - 1``) a function's resources live in."""
    return int(hashlib.sha256(function_id.encode()).hexdigest(), 16) % FUNCTION_GROUPS


def queue_arn_chunks(queue_names: Iterable[str]) -> list[list[str]]:
    """Queue names split so each chunk's ARNs fit one managed policy, in order."""
    chunks: list[list[str]] = [[]]
    size = _POLICY_OVERHEAD
    for name in queue_names:
        cost = _ARN_BYTES + len(name)
        if chunks[-1] and size + cost > MAX_MANAGED_POLICY_BYTES:
            chunks.append([])
            size = _POLICY_OVERHEAD
        chunks[-1].append(name)
        size += cost
    return chunks if chunks[-1] else []


@dataclass(frozen=True)
class FunctionShape:
    """What of a function decides its share of the limits.

    Attributes:
        id: The function id.
        event_triggers: Triggers with an EventBridge rule (events not stepkit's own).
        cron_triggers: Cron triggers (one schedule each).
        managed_policies: Managed policies of its own (``AwsOptions``, with the VPC one).
        queue_name: Its queue's name.
    """

    id: str
    event_triggers: int
    cron_triggers: int
    managed_policies: int
    queue_name: str

    def resources(self) -> int:
        """Resources it adds to its group's template."""
        return (RESOURCES_PER_FUNCTION
                + (RESOURCES_PER_EVENT_TRIGGER if self.event_triggers else 0)
                + (RESOURCES_PER_CRON_FUNCTION if self.cron_triggers else 0)
                + RESOURCES_PER_CRON_TRIGGER * self.cron_triggers)


@dataclass(frozen=True)
class Usage:
    """How much of one limit an app uses.

    Attributes:
        limit: The limit's name, as AWS documents it.
        used: What the app uses.
        maximum: The limit.
        where: What uses it (a nested stack, a role).
        fix: What to do when it gets close.
    """

    limit: str
    used: int
    maximum: int
    where: str
    fix: str

    @property
    def share(self) -> float:
        """``used`` as a share of ``maximum``."""
        return self.used / self.maximum


def usage(functions: Iterable[FunctionShape]) -> list[Usage]:
    """The app's use of each limit the design still has, from its functions alone."""
    shapes = list(functions)
    groups: dict[int, list[FunctionShape]] = {}
    for shape in shapes:
        groups.setdefault(function_group(shape.id), []).append(shape)
    out: list[Usage] = []
    if groups:
        group, members = max(groups.items(),
                             key=lambda g: sum(f.resources() for f in g[1]))
        out.append(Usage(
            "CloudFormation resources per template",
            RESOURCES_PER_GROUP + sum(f.resources() for f in members), MAX_RESOURCES,
            f"nested stack of function group {group} ({len(members)} functions)",
            "split the app into two apps (stacks), or give functions fewer cron triggers"))
    out.append(Usage(
        "EventBridge rules per event bus", 1 + sum(1 for f in shapes if f.event_triggers),
        MAX_RULES_PER_BUS, "the app's bus (one rule per event-triggered function, the router)",
        "request a higher 'Rules per event bus' quota, or split the app"))
    chunks = len(queue_arn_chunks(f.queue_name for f in shapes))
    own = max((f.managed_policies for f in shapes), default=0)
    out.append(Usage(
        "IAM managed policies per role", chunks + own, MAX_MANAGED_POLICIES_PER_ROLE,
        f"each function's role ({chunks} that send to the app's queues, {own} of its own)",
        "request a higher 'Managed policies per role' quota (20 at most), or use shorter "
        "function ids"))
    roles = ROOT_ROLES + len(shapes) + sum(1 for f in shapes if f.cron_triggers)
    out.append(Usage(
        "IAM roles per account", roles, MAX_ROLES_PER_ACCOUNT,
        "this app alone (the account's other roles count too)",
        "request a higher 'Roles per account' quota"))
    return out
