"""Workloads a node serves: each one a plugin found through the ``proxima.workloads`` entry points.

``matmul`` and ``embed`` ship with the node; their modules are imported when they are loaded
(:func:`load_workloads`), so the embed extra (torch, sentence-transformers) is only needed to run ``embed``.
"""

from proxima.node.workloads.base import (
    DEVICES,
    ENTRY_POINT_GROUP,
    Device,
    InvalidInputError,
    UnknownWorkloadError,
    Workload,
    WorkloadCost,
    WorkloadError,
    WorkloadExecutionError,
    WorkloadPluginError,
    WorkloadUnavailableError,
    available_workloads,
    load_workloads,
)

__all__ = [
    "DEVICES",
    "ENTRY_POINT_GROUP",
    "Device",
    "InvalidInputError",
    "UnknownWorkloadError",
    "Workload",
    "WorkloadCost",
    "WorkloadError",
    "WorkloadExecutionError",
    "WorkloadPluginError",
    "WorkloadUnavailableError",
    "available_workloads",
    "load_workloads",
]
