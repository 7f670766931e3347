"""All conversion code, in layers that import only downwards (docs/architecture.md; `tox -e lint` checks them);
no pytest imports anywhere here."""
