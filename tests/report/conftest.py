"""Fixtures of the report tests (helpers live in report_helpers.py)."""

from report_helpers import small_report, small_wafer  # noqa: F401  (fixtures)
