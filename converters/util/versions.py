"""Installed distribution versions (stdlib only, usable in any worker interpreter)."""

from __future__ import annotations


def package_versions(*names: str) -> dict[str, str]:
    """Installed versions of distributions (``not-installed`` when absent)."""
    from importlib import metadata

    out = {}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not-installed"
    return out
