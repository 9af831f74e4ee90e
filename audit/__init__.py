"""Auditor tools: index the contracts' events into SQLite, recompute the ledger from them and check it.

``proxima-audit`` (:mod:`proxima.audit.cli`) is the command line; :mod:`proxima.audit.api` the HTTP API and
web explorer (mounted in the gateway, or run alone). See docs/AUDIT.md.
"""
