"""The cdk-nag rules that do not apply to a stepkit resource, each with why.

``tests/infra/test_lint.py`` runs the AwsSolutions and Serverless packs on the synthesized
stack; every finding is either fixed in the construct or acknowledged here, next to the fact
that makes the rule not apply. The test lists the acknowledged rules too, so a new one is a
deliberate decision.
"""

from __future__ import annotations

import jsii
from aws_cdk import Acknowledgment, Aspects, IAspect, Validations
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_sqs as sqs
from constructs import IConstruct

from runtime.backends.aws.resources import MAX_RECEIVES


def _acknowledge(scope: IConstruct, rule: str, reason: str) -> None:
    Validations.of(scope).acknowledge(Acknowledgment(id=rule, reason=reason))


def acknowledge_queue_worker(*, function: lambda_.Function, dlq: sqs.Queue) -> None:
    """The rules a queue-fed Lambda and its dead-letter queue meet another way.

    Args:
        function: The Lambda, fed by an SQS event source mapping.
        dlq: The dead-letter queue of that SQS queue (see :func:`acknowledge_dead_letter_queue`).
    """
    _acknowledge(
        function, "Serverless-LambdaDLQ",
        "The function is only invoked by its SQS event source mapping, which invokes it "
        "synchronously; a Lambda dead-letter queue only receives failed asynchronous "
        "invocations. Failed messages go to the queue's own DLQ by its redrive policy.",
    )
    _acknowledge(
        function, "Serverless-LambdaEventSourceMappingDestination",
        "On-failure destinations exist for stream and Kafka event sources, not SQS; an SQS "
        "event source mapping leaves failed messages on the queue, whose redrive policy "
        f"moves them to the DLQ after {MAX_RECEIVES} receives.",
    )
    acknowledge_dead_letter_queue(dlq)


def acknowledge_dead_letter_queue(queue: sqs.Queue) -> None:
    """A dead-letter queue needs no redrive policy of its own.

    Args:
        queue: A queue that only ever receives dead letters (no consumer).
    """
    _acknowledge(
        queue, "Serverless-SQSRedrivePolicy",
        "This queue is itself a dead-letter queue: nothing consumes it, so no receive can "
        "fail and need a redrive policy; it keeps messages 14 days for inspection and a "
        "redrive back to where they came from.",
    )


@jsii.implements(IAspect)
class _AcknowledgeUntraced:
    """At synthesis, whatever set the tracing mode: acknowledge the rule only when off."""

    def visit(self, node: IConstruct) -> None:
        if not isinstance(node, lambda_.CfnFunction):
            return
        config = node.tracing_config  # a struct, or None when unset
        mode = config.mode if isinstance(config, lambda_.CfnFunction.TracingConfigProperty) \
            else None
        if mode != "Active":
            _acknowledge(
                node, "Serverless-LambdaTracing",
                "X-Ray active tracing is opt-in (CDK context stepkit:tracing=true), because it "
                "is billed per trace; it is off in this deployment, and every run and step is "
                "recorded in the state table and the function's structured logs.",
            )


def acknowledge_untraced(scope: IConstruct) -> None:
    """Acknowledge Serverless-LambdaTracing on each Lambda in ``scope`` (one function or a
    whole stack) that is not traced when the stack is synthesized; tracing may be set after
    this call."""
    Aspects.of(scope).add(_AcknowledgeUntraced())


#: The one wildcard resource of the stack, as cdk-nag names it: the schedules of a group.
TIMER_SCHEDULES = ("Resource::arn:<AWS::Partition>:scheduler:<AWS::Region>:<AWS::AccountId>:"
                   "schedule/{group}/*")


def acknowledge_timer_schedules(policy: IConstruct, group: str) -> None:
    """The one wildcard resource of the stack: the schedules of the app's group.

    Only that resource is acknowledged, so any other wildcard still fails the synth.

    Args:
        policy: The policy letting Lambdas create timer schedules.
        group: The app's schedule group.
    """
    _acknowledge(
        policy, f"AwsSolutions-IAM5[{TIMER_SCHEDULES.format(group=group)}]",
        "Each long timer is a one-time schedule named at run time after its message, so "
        "CreateSchedule (nor the DeleteSchedule of a timer made moot) cannot name its resource "
        "ahead; the wildcard is only the schedule "
        "names within the app's own schedule group, and the only role it may pass is the "
        "timer role, only to Scheduler.",
    )


def acknowledge_payload_bucket(bucket: IConstruct) -> None:
    """The payload bucket keeps no server access log.

    Args:
        bucket: The app's payload bucket (``infra/constructs/payloads.py``).
    """
    _acknowledge(
        bucket, "AwsSolutions-S1",
        "Only the app's own Lambda roles can reach its objects (PutObject and GetObject on "
        "runs/*, TLS only, all public access blocked), and which run wrote each object is in "
        "its key and in the state table. An access log would need a second bucket, itself "
        "unlogged, and a log record for every large output; CloudTrail S3 data events give "
        "an audit trail where one is required.",
    )


#: The payload objects, as cdk-nag names them: every key under runs/ of the bucket.
PAYLOAD_OBJECTS = "Resource::<{bucket}.Arn>/runs/*"


def acknowledge_payload_objects(policy: IConstruct, bucket: str) -> None:
    """The payload objects are named at run time, after their run and digest.

    Only that resource is acknowledged, so any other wildcard still fails the synth.

    Args:
        policy: The policy letting Lambdas put and get payload objects.
        bucket: The bucket's logical id.
    """
    _acknowledge(
        policy, f"AwsSolutions-IAM5[{PAYLOAD_OBJECTS.format(bucket=bucket)}]",
        "Each object is named when an output is stored, runs/<run id>/<sha256 of its "
        "content>.json, so no key can be named ahead; the wildcard is only the keys under "
        "runs/ of the app's own bucket, and only for PutObject and GetObject (no delete; "
        "ListBucket is granted on the bucket alone, so a missing key answers 404).",
    )


def acknowledge_event_api_function(function: IConstruct) -> None:
    """The event endpoint's Lambda is invoked synchronously, by API Gateway.

    Args:
        function: The endpoint's Lambda (``infra/constructs/event_api.py``).
    """
    _acknowledge(
        function, "Serverless-LambdaDLQ",
        "API Gateway invokes the endpoint's Lambda synchronously and answers the caller with "
        "its result; a Lambda dead-letter queue only receives failed asynchronous invocations. "
        "A failed request is answered 5xx (alarmed), and the sender retries it.",
    )


def acknowledge_event_api_routes(api: IConstruct) -> None:
    """The event endpoint's routes authenticate in the Lambda, not with an authorizer.

    Args:
        api: The endpoint's HTTP API.
    """
    _acknowledge(
        api, "AwsSolutions-APIG4",
        "The senders are event producers holding an event key and third-party webhook "
        "providers signing with a shared secret: neither can sign with SigV4 (IAM) or fetch a "
        "JWT. The Lambda refuses a request whose event key is unknown or whose signature does "
        "not verify, with 401, before publishing anything; a Lambda authorizer would only "
        "make the same check a second invocation. The stage throttle bounds what refused "
        "requests cost.",
    )
