"""Workloads a node serves: each one a plugin found through the ``proxima.workloads`` entry points."""
