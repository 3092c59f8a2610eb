"""Fixtures of the campaign-store tests (helpers live in store_helpers.py)."""

from store_helpers import two_wafers  # noqa: F401  (fixture)
