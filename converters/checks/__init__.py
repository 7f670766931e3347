"""Checks of an artifact: parity comparison, thresholds, layer localisation, accuracy gates."""
