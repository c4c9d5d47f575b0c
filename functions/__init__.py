"""Example durable functions. `stepkit dev` and `cdk deploy` find the app defined here."""

from runtime import App

app = App("demo")

# Importing the package registers every function, so `from functions import app` is the
# whole app (tests, scripts); the modules import `app` from here, defined above.
from functions import agent, digest, orders, payments, webhooks, welcome  # noqa: E402, F401
