"""The AWS backend: DynamoDB run state, SQS function queues, EventBridge events and cron."""
