"""Shared, session-scoped fixtures: converting chorales is the slow part, so it happens once."""
from __future__ import annotations

import pytest

CHORALES = 6


@pytest.fixture(scope="session")
def chorales_cache(tmp_path_factory):
    """A private cache holding the first few chorales as MIDI (converted once per session)."""
    from shortcutlm.datasets.embedded import convert_chorales

    cache = tmp_path_factory.mktemp("shortcutlm_cache")
    kept, _ = convert_chorales(limit=CHORALES, cache=cache, workers=2)
    assert kept, "no chorale converted"
    return cache
