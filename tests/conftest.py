"""Shared pytest fixtures for the Routilux test suite."""
