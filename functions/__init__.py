"""Example durable functions. `stepkit dev` and `cdk deploy` find the app defined here."""

from runtime import App

app = App("demo")
