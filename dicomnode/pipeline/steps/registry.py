"""The registry of step kinds: ``kind`` -> implementation, filled by ``@register``.

Each implementation module registers its class next to its parameter model; the set of
kinds a YAML file may use is the union in ``config.py``, and a test checks that both agree.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar

from dicomnode.errors import ConfigError
from dicomnode.pipeline.steps.abc import Step, StepParams

StepFactory = Callable[[Any], Step]  # called with the step's own parameter model
F = TypeVar("F", bound=StepFactory)

STEPS: dict[str, StepFactory] = {}


def register(params_type: type[StepParams]) -> Callable[[F], F]:
    """Register the decorated class as the implementation of ``params_type``'s kind."""
    kind = params_type.model_fields["kind"].default
    if not isinstance(kind, str):
        raise TypeError(f"{params_type.__name__}.kind needs a default naming its kind")

    def add(implementation: F) -> F:
        if kind in STEPS:
            raise ValueError(f"step kind {kind!r} is registered twice")
        STEPS[kind] = implementation
        return implementation

    return add


def build_steps(configs: Iterable[StepParams], base_dir: Path | None = None) -> list[Step]:
    """The steps of a pipeline, in order; only the last one may make channels.

    ``base_dir`` (the configuration file's folder) resolves a step's relative file paths
    (``register``'s template); without it they are taken from the working directory. A
    step that needs a file checks it here: ConfigError names the step and the key.
    """
    params = list(configs)
    for index, config in enumerate(params[:-1]):
        if config.makes_channels:
            raise ConfigError(
                f"step {index + 1} ({config.kind}) makes channels, so it must be the last step"
            )
    steps: list[Step] = []
    for index, config in enumerate(params):
        factory = STEPS.get(config.kind)
        if factory is None:
            known = ", ".join(sorted(STEPS))
            raise ConfigError(f"unknown step kind {config.kind!r}; kinds: {known}")
        try:
            steps.append(factory(config if base_dir is None else config.resolved(base_dir)))
        except ConfigError as exc:
            raise ConfigError(f"step {index + 1} ({config.kind}): {exc}") from None
    return steps
