"""Which events the timeline keeps: those a wait or a ``cancel_on`` of the app could look for.

The timeline is what a wait committed after its event was sent looks back over (its
lookback, :mod:`runtime.orchestration.matching`). Names the app sends itself (``stepkit/...``:
one ``function.finished`` per run, more per failure) are kept only when something may look
for them: a ``cancel_on`` that names one (known at registration), or a ``wait_for_event`` in
the source of a handler's module, or of a module of its package it refers to, whose
``event=`` is that name. A wait whose name is not a
string in the source (a variable, a constant imported from ``runtime.events``), or a handler
whose module has no readable source, may wait on any name: then every system name is kept.
Users' event names are always kept, since a wait's name is a string known only at run time;
the store spreads each name's entries over shards, so a busy name is not a hot key.
"""

from __future__ import annotations

import sys
from functools import lru_cache

from runtime.app import App
from runtime.events import SYSTEM_PREFIX

#: The step method whose ``event=`` argument names what a run waits for.
_WAIT_CALL = "wait_for_event"


def keeps(app: App, name: str) -> bool:
    """Whether the timeline keeps events named ``name`` for ``app``'s lookbacks."""
    if not name.startswith(SYSTEM_PREFIX):
        return True
    names = system_names(app, len(list(app)))
    return names is None or name in names


@lru_cache(maxsize=16)
def system_names(app: App, _functions: int) -> frozenset[str] | None:
    """System event names ``app`` cancels by or waits on; ``None``: it may wait on any.

    Cached per app and number of functions (registering one more reads the source again).
    """
    names = {spec.event for fn in app for spec in fn.cancel_on}
    for module in sorted({m for fn in app for m in _modules_of(fn.handler)}):
        waits = waited_names(module)
        if waits is None:
            return None
        names |= waits
    return frozenset(n for n in names if n.startswith(SYSTEM_PREFIX))


def _modules_of(handler: object) -> set[str]:
    """The handler's module, and the modules of its package it refers to by name.

    A wait may sit in a helper the handler calls (``from functions.orders import pay``), not
    only in the handler's own module.
    """
    import types

    own = str(getattr(handler, "__module__", ""))
    top = own.partition(".")[0]
    found = {own}
    for value in getattr(handler, "__globals__", {}).values():
        name = value.__name__ if isinstance(value, types.ModuleType) else getattr(
            value, "__module__", None)
        if isinstance(name, str) and name.partition(".")[0] == top:
            found.add(name)
    return found


def waited_names(module: str) -> set[str] | None:
    """Event names ``module``'s ``wait_for_event`` calls give as strings; ``None``: not all are.

    ``None`` too when the module's source cannot be read: it may wait on anything.
    """
    import ast  # the router's, once per app and process: off the workers' cold start
    import inspect

    try:
        tree = ast.parse(inspect.getsource(sys.modules[module]))
    except (KeyError, OSError, TypeError, SyntaxError):
        return None
    names: set[str] = set()
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                and node.func.attr == _WAIT_CALL):
            continue
        event = next((kw.value for kw in node.keywords if kw.arg == "event"), None)
        if event is None and len(node.args) > 1:
            event = node.args[1]
        if not (isinstance(event, ast.Constant) and isinstance(event.value, str)):
            return None
        names.add(event.value)
    return names
