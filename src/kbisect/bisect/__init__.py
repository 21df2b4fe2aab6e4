"""Bisection: git chooses the steps, kbisect decides them from flaky runs and validates."""
