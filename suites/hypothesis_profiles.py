"""Hypothesis profiles for the harness's property suites.

* ``dev`` (default locally): ~30 examples per property, random, example database in ``.hypothesis/``
  (git-ignored) so failures found once are replayed first.
* ``ci`` (default when ``$CI`` is set): derandomized (same examples on every run and machine), 300 examples,
  no deadline, ``print_blob`` for reproduction, and no example database at all (nothing written to the tree).

Selection: ``load_profile(name)``, else ``$HARNESS_HYPOTHESIS_PROFILE``, else ``ci`` if ``$CI`` is set, else
``dev``. Because the profiles are registered on import, Hypothesis's own ``--hypothesis-profile=ci`` pytest
option works too once this module is imported from ``conftest.py``.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

__all__ = ["ENV_VAR", "PROFILES", "current_profile", "load_profile", "profile_loaded"]

ENV_VAR = "HARNESS_HYPOTHESIS_PROFILE"
PROFILES = ("dev", "ci")

settings.register_profile(
    "dev",
    max_examples=30,
    deadline=None,  # CPU jitter (first torch / ORT call) must not fail a property
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile(
    "ci",
    max_examples=300,
    derandomize=True,
    deadline=None,
    print_blob=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)

_loaded: str | None = None


def load_profile(name: str | None = None) -> str:
    """Load and return the chosen profile name (argument > ``$HARNESS_HYPOTHESIS_PROFILE`` > ``$CI`` > dev)."""
    global _loaded
    chosen = name or os.environ.get(ENV_VAR) or ("ci" if os.environ.get("CI") else "dev")
    if chosen not in PROFILES:
        raise ValueError(f"unknown Hypothesis profile {chosen!r}; choose one of {', '.join(PROFILES)}")
    settings.load_profile(chosen)
    _loaded = chosen
    return chosen


def current_profile() -> str:
    """Name of the Hypothesis profile currently in effect (``default`` if none was loaded)."""
    return settings.get_current_profile_name()


def profile_loaded() -> bool:
    """True once a profile was chosen, by :func:`load_profile` or by Hypothesis's ``--hypothesis-profile``.

    Hypothesis auto-loads its built-in ``ci`` profile when it detects CI (our registration replaces it); that
    does not count as a choice, so ``$HARNESS_HYPOTHESIS_PROFILE`` still applies there.
    """
    return _loaded is not None or current_profile() not in ("default", "ci")
