"""Proxima node."""
