"""Evaluation: checks on model answers (``checks``), so a suite run can say which model answered well."""
