"""Fixtures of the report tests (helpers live in report_helpers.py)."""

from report_helpers import condition_report, small_report, small_wafer  # noqa: F401  (fixtures)
