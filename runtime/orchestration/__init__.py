"""Internal: how messages and events become commits (the public API is :mod:`runtime`).

:mod:`runtime.orchestration.orchestrator` is the facade; each other module is one part of it
(its table lists them), over the ports of :mod:`runtime.orchestration.protocols`.
"""
