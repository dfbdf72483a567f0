"""Third-party code named as ``"package.module:attribute"``, resolved when config is checked.

A name, not an import in the configuration, keeps configuration data; resolving it in
``load`` (which ``dicomnode config check`` runs) turns a typo into a check failure instead
of a failed job on the first study.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable
from typing import Any

from dicomnode.errors import RunnerError

REFERENCE_PATTERN = r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$"


def resolve_callable(reference: str) -> Callable[..., Any]:
    """The callable that ``reference`` names; RunnerError says which part is missing."""
    if not re.match(REFERENCE_PATTERN, reference):
        raise RunnerError(f"{reference!r} is not of the form 'package.module:function'")
    module_name, _, attribute = reference.partition(":")
    try:
        target: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise RunnerError(f"cannot import module {module_name!r} for {reference!r}: {exc}") from exc
    except Exception as exc:  # the module's own code failed while importing
        raise RunnerError(
            f"importing module {module_name!r} for {reference!r} failed: "
            f"{type(exc).__name__}: {exc}"
        ) from exc
    for part in attribute.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            raise RunnerError(
                f"module {module_name!r} has no attribute {attribute!r} (from {reference!r})"
            ) from None
    if not callable(target):
        raise RunnerError(f"{reference!r} is a {type(target).__name__}, not a function")
    function: Callable[..., Any] = target
    return function
