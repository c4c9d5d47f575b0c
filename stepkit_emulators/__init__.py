"""The AWS backend of :class:`runtime.testing.Harness`, on local emulators (``stepkit[emulators]``).

Kept out of ``runtime`` because it needs moto (and reaches into its internals to make it follow
a fake clock) and a DynamoDB Local jar, which a user of ``runtime`` neither has nor needs: the
``runtime`` package, its harness included, imports nothing from here (``Harness.aws`` imports
:mod:`stepkit_emulators.aws` when called). Install with ``pip install 'stepkit[emulators]'``
and point ``$STEPKIT_DYNAMODB_LOCAL_DIR`` at the jar's folder (in this repository,
``.ci/install-emulators.sh`` puts it where :mod:`stepkit_emulators.emulators` looks by default).

- :mod:`stepkit_emulators.emulators`: start DynamoDB Local and moto (``aws_emulators()``);
- :mod:`stepkit_emulators.moto_clock`: moto's SQS and EventBridge on the test's fake clock;
- :mod:`stepkit_emulators.aws`: ``AwsBackend``, the test driver that plays the Lambda SQS
  event source and EventBridge Scheduler over the real handlers;
- :mod:`stepkit_emulators.lambda_events`: SQS ``ReceiveMessage`` output as a Lambda event.
"""
