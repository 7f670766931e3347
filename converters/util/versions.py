"""Installed distribution versions (stdlib only, usable in any worker interpreter)."""

from __future__ import annotations

import functools


def package_versions(*names: str) -> dict[str, str]:
    """Installed versions of distributions (``not-installed`` when absent)."""
    return {name: _version(name) for name in names}


@functools.cache
def _version(name: str) -> str:
    """Read once per process: every cell's cache key asks (a metadata scan of site-packages, ~8 ms each)."""
    from importlib import metadata

    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not-installed"
