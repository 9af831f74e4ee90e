"""Discrete-event simulation of the marketplace on real public data (``proxima-sim``; see docs/SIMULATION.md).

Placement decisions come from the real :mod:`proxima.marketplace.matching` engine; settlement and slashing
follow the contracts' rules, and a sample can be replayed onto the real contracts on py-evm.
"""
