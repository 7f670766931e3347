"""The session's Harness: :class:`export_harness.converters.session.Session` plus the pytest config. Imported when
the first harness item needs it (:func:`export_harness.plugin.core.get_harness`), never when the plugin loads."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from export_harness.converters.session import Session
from export_harness.models.weights import WeightsError


@dataclass(kw_only=True)
class Harness(Session):
    """Session state shared by all cells (registries, cache, thresholds and built models) plus the pytest config; a
    weights file that does not load fails the test with its one line."""

    config: pytest.Config

    def weights_failure(self, message: str, error: WeightsError) -> BaseException:
        return pytest.fail.Exception(message, pytrace=False)
