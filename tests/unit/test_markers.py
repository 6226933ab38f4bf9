"""A test that runs a stock binary is marked `integration`, also through a fixture."""

from __future__ import annotations

from pathlib import Path

import pytest


def test_a_stock_binary_fixture_marks_the_test(
    request: pytest.FixtureRequest, age_identity: tuple[Path, str]
) -> None:
    assert age_identity[0].is_file()  # made by the stock age-keygen
    assert request.node.get_closest_marker("integration") is not None


def test_a_test_without_one_stays_unmarked(request: pytest.FixtureRequest) -> None:
    assert request.node.get_closest_marker("integration") is None
