from .fixtures import aws, aws_session

__all__ = ["aws", "aws_session"]
