"""Find the app defined in a project's ``functions/`` package.

The CDK app, the dev server and the Lambda handlers all use this one registry, so what is
deployed is exactly what runs locally.
"""

from __future__ import annotations

import importlib
import os
import pkgutil
import sys
import traceback
from contextlib import nullcontext
from pathlib import Path
from types import ModuleType

from runtime.app import App
from runtime.checks import checked_at_deploy
from runtime.errors import ConfigurationError

DEFAULT_PACKAGE = "functions"


def load_app(
    package: str | None = None, *, root: str | Path | None = None, deployed: bool = False
) -> App:
    """Import ``package`` and every module in it, and return the one ``App`` they define.

    Args:
        package: The functions package name (default ``$STEPKIT_FUNCTIONS`` or ``functions``).
        root: Directory containing the package (default: the current directory).
        deployed: The app is the one ``cdk synth`` loaded with every check (a Lambda
            handler's): registration leaves CEL and cron parsing to first use
            (:mod:`runtime.checks`), which keeps celpy and croniter off a cold start.

    Raises:
        ConfigurationError: The package is missing, fails to import, or defines no app or
            more than one.
    """
    package = package or os.environ.get("STEPKIT_FUNCTIONS", DEFAULT_PACKAGE)
    base = str(Path(root or os.getcwd()).resolve())
    if base not in sys.path:
        sys.path.insert(0, base)
    with checked_at_deploy() if deployed else nullcontext():
        modules = [_import(package)]
        _check_is_here(modules[0], package, base)
        pkg_path = getattr(modules[0], "__path__", None)
        if pkg_path is not None:
            for info in sorted(pkgutil.walk_packages(pkg_path, prefix=f"{package}."), key=_name):
                modules.append(_import(info.name))
    apps: dict[int, App] = {}
    for module in modules:
        for value in vars(module).values():
            if isinstance(value, App):
                apps[id(value)] = value
    if not apps:
        raise ConfigurationError(
            f"no App found in package '{package}' (under {base}); define one, e.g. "
            "`app = App('my-app')` in functions/__init__.py"
        )
    if len(apps) > 1:
        names = ", ".join(sorted(a.id for a in apps.values()))
        raise ConfigurationError(f"package '{package}' defines several apps ({names}); use one")
    return next(iter(apps.values()))


def _check_is_here(module: ModuleType, package: str, base: str) -> None:
    """Refuse the default ``functions`` package when it is another project's.

    An editable install puts stepkit's own checkout on the import path, so ``stepkit dev``
    run anywhere else would silently serve stepkit's example app instead of saying there is
    no ``functions/`` here. (A package named explicitly may live anywhere.)
    """
    origin = Path(getattr(module, "__file__", None) or "").resolve()
    if package == DEFAULT_PACKAGE and not origin.is_relative_to(base):
        raise ConfigurationError(
            f"no '{package}/' package in {base}: the '{package}' on the import path is "
            f"{origin.parent}, another project's. Run stepkit in your project's directory "
            f"(the one holding {package}/), or name your package with --functions "
            "(STEPKIT_FUNCTIONS)")


def _name(info: pkgutil.ModuleInfo) -> str:
    return info.name


def _import(name: str) -> ModuleType:
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name == name:
            raise ConfigurationError(
                f"cannot import functions package '{name}' (sys.path[0]={sys.path[0]})"
            ) from None
        raise ConfigurationError(_failure(name, exc)) from exc
    except ConfigurationError as exc:  # a registration error: already names the function
        raise ConfigurationError(f"importing '{name}': {exc}") from exc
    except Exception as exc:  # the user's module raised while being imported
        raise ConfigurationError(_failure(name, exc)) from exc


def _failure(name: str, exc: BaseException) -> str:
    """``importing 'x' failed: Type: message`` and where, in the user's own files."""
    frames = traceback.extract_tb(exc.__traceback__)
    if isinstance(exc, SyntaxError) and exc.filename:
        where = f"{exc.filename}, line {exc.lineno}"
    else:
        own = [f for f in frames if "importlib" not in f.filename]
        where = f"{own[-1].filename}, line {own[-1].lineno}" if own else "?"
    return f"importing '{name}' failed: {type(exc).__name__}: {exc} (at {where})"
