"""The CDK app that deploys a stepkit app's functions to AWS (``scripts/cdk.sh deploy``)."""
