"""Proxima sdk."""
