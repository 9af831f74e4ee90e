"""Proxima marketplace."""
