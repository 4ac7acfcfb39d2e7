"""Helpers of the tests (real PostgreSQL servers, real processes, test handlers, model stores).

``conftest.py`` files hold fixtures only; what they and the tests share lives here.
"""
