"""AWS Lambda entry points: ``worker.handler`` (one per function queue), ``router.handler``."""
