"""Builders and helpers shared by test modules (no tests here)."""
