"""Helpers for shardkit's own tests (and for users testing code built on it)."""
