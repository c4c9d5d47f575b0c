from tests.aws_emulators.fixtures import aws, aws_session  # noqa: F401
