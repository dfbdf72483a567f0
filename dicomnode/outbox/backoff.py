"""Exponential backoff with jitter: 10 s, 20 s, 40 s ... capped, never in lockstep."""

from __future__ import annotations

import random

from dicomnode.config import RetryPolicy


def retry_delay(policy: RetryPolicy, attempts: int, rng: random.Random | None = None) -> float:
    """Seconds to wait after the ``attempts``-th failed attempt (1-based)."""
    base = min(policy.max_seconds, policy.initial_seconds * 2.0 ** max(0, attempts - 1))
    spread = float((rng or random).uniform(-policy.jitter, policy.jitter))
    return max(0.0, base * (1 + spread))
