"""The registry of runner kinds: ``kind`` -> implementation, filled by ``@register``.

Each implementation module registers its class next to its parameter model; the set of
kinds a YAML file may use is the union in ``config.py``, and a test checks that both agree.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from dicomnode.errors import ConfigError
from dicomnode.runners.abc import Runner, RunnerFactory, RunnerParams

F = TypeVar("F", bound=RunnerFactory)

RUNNERS: dict[str, RunnerFactory] = {}


def register(params_type: type[RunnerParams]) -> Callable[[F], F]:
    """Register the decorated class as the implementation of ``params_type``'s kind."""
    kind = params_type.model_fields["kind"].default
    if not isinstance(kind, str):
        raise TypeError(f"{params_type.__name__}.kind needs a default naming its kind")

    def add(implementation: F) -> F:
        if kind in RUNNERS:
            raise ValueError(f"runner kind {kind!r} is registered twice")
        RUNNERS[kind] = implementation
        return implementation

    return add


def build_runner(name: str, params: RunnerParams, base_dir: Path) -> Runner:
    """The runner of model ``name``, not yet loaded; relative paths resolve in ``base_dir``."""
    factory = RUNNERS.get(params.kind)
    if factory is None:
        known = ", ".join(sorted(RUNNERS))
        raise ConfigError(f"model {name!r}: unknown runner kind {params.kind!r}; kinds: {known}")
    return factory(name, params, base_dir)
