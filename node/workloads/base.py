"""The workload plugin interface and its loader.

A workload is a :class:`Workload` subclass registered under the ``proxima.workloads`` entry-point group;
the entry point's name is the workload's ``name``. Another distribution adds one with, in its
``pyproject.toml``::

    [project.entry-points."proxima.workloads"]
    cube = "my_package.cube:CubeWorkload"

The job server calls :meth:`Workload.parse` on the request's input, prices it with
:meth:`Workload.estimate`, runs :meth:`Workload.execute` in a worker thread and signs
:meth:`Workload.result_hash` of the output.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points
from typing import Any, ClassVar, Final, Literal, TypeVar, get_args

from eth_utils.crypto import keccak
from pydantic import BaseModel

from proxima.node.errors import NodeError
from proxima.sdk.workloads import WorkloadSpecError, canonical_json, spec_hash, validate_payload

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

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP: Final = "proxima.workloads"

Device = Literal["cpu", "cuda"]
DEVICES: Final[tuple[Device, ...]] = get_args(Device)


class WorkloadError(NodeError):
    """Root of the workload errors."""


class UnknownWorkloadError(WorkloadError, KeyError):
    """No workload of that name is registered.

    Args:
        name: The name asked for.
        available: The registered names.
    """

    def __init__(self, name: str, available: Iterable[str]) -> None:
        self.name = name
        self.available = tuple(sorted(available))
        super().__init__(
            f"unknown workload {name!r}; available: {', '.join(self.available) or 'none registered'}"
        )

    def __str__(self) -> str:  # KeyError would show the message quoted
        return str(self.args[0])


class InvalidInputError(WorkloadError, ValueError):
    """A job input does not validate; the message names each invalid field.

    Args:
        workload: The workload's name.
        problem: What is wrong, naming the field.
    """

    def __init__(self, workload: str, problem: str) -> None:
        self.workload = workload
        self.problem = problem
        super().__init__(problem)


class WorkloadPluginError(WorkloadError):
    """An entry point in ``proxima.workloads`` cannot be used as a workload.

    Args:
        entry_point: The entry point's name.
        value: Its ``module:attribute`` value.
        problem: What is wrong with it.
    """

    def __init__(self, entry_point: str, value: str, problem: str) -> None:
        self.entry_point = entry_point
        self.value = value
        super().__init__(f"workload plugin {entry_point!r} ({value}): {problem}")


class WorkloadUnavailableError(WorkloadError):
    """A workload cannot run here: a missing optional dependency, an absent device, weights that do not load.

    Args:
        workload: The workload's name.
        device: The device asked for.
        reason: Why.
    """

    def __init__(self, workload: str, device: str, reason: str) -> None:
        self.workload = workload
        self.device = device
        super().__init__(f"workload {workload!r} is unavailable on {device}: {reason}")


class WorkloadExecutionError(WorkloadError):
    """A valid job failed while it ran (for example the device ran out of memory).

    Args:
        workload: The workload's name.
        reason: What failed.
    """

    def __init__(self, workload: str, reason: str) -> None:
        self.workload = workload
        super().__init__(f"workload {workload!r} failed: {reason}")


@dataclass(frozen=True)
class WorkloadCost:
    """What a job costs.

    Attributes:
        units: Billing units (``proxima.sdk.workloads.billing_units``); price = units * unit price.
        flops: Floating-point operations, estimated.
        bytes_in: Bytes of input data the computation reads (operands, text).
        bytes_out: Bytes of the result's raw data.
    """

    units: int
    flops: int
    bytes_in: int
    bytes_out: int


ModelT = TypeVar("ModelT", bound=BaseModel)


class Workload(ABC):
    """One kind of job a node runs.

    Subclasses set ``name`` (equal to their entry point's name), ``input_model`` and ``output_model``, and
    implement :meth:`estimate` and :meth:`execute`. Instances may be used from several threads at once.

    Args:
        device: Where it computes.

    Raises:
        WorkloadUnavailableError: If ``device`` is not one of :data:`DEVICES`.
    """

    name: ClassVar[str]
    input_model: ClassVar[type[BaseModel]]
    output_model: ClassVar[type[BaseModel]]

    def __init__(self, device: Device = "cpu") -> None:
        if device not in DEVICES:
            raise WorkloadUnavailableError(self.name, str(device), f"unknown device; use one of {DEVICES}")
        self.device: Device = device

    def __repr__(self) -> str:
        return f"{type(self).__name__}(device={self.device!r})"

    def models(self) -> tuple[str, ...]:
        """Names of the models this workload serves (empty when it has none)."""
        return ()

    def parse(self, payload: Mapping[str, Any]) -> BaseModel:
        """Validate a job's input (a decoded JSON object).

        Raises:
            InvalidInputError: Naming each invalid field.
        """
        try:
            return validate_payload(self.input_model, payload, f"{self.name} input")
        except WorkloadSpecError as err:
            raise InvalidInputError(self.name, str(err)) from err

    def spec_hash(self, inp: BaseModel) -> bytes:
        """The job's ``spec_hash`` (see ``proxima.sdk.workloads.spec_hash``)."""
        return spec_hash(self.name, self._expect(inp, self.input_model))

    @abstractmethod
    def estimate(self, inp: BaseModel) -> WorkloadCost:
        """What running ``inp`` costs (cheap: no computation of the job itself)."""

    def load(self) -> None:
        """Prepare to run (load weights, check the device). Idempotent and thread-safe; the default does
        nothing. :meth:`execute` calls it, so calling it earlier only moves the wait.

        Raises:
            WorkloadUnavailableError: If the workload cannot run here.
        """
        return

    @abstractmethod
    def execute(self, inp: BaseModel) -> BaseModel:
        """Run a job (blocking; the job server calls it in a worker thread).

        Raises:
            InvalidInputError: If ``inp`` is not this workload's input model.
            WorkloadUnavailableError: If the workload cannot run here.
            WorkloadExecutionError: If the computation failed.
        """

    def result_hash(self, out: BaseModel) -> bytes:
        """The 32-byte hash a receipt signs. The default is ``keccak256(canonical_json({"output": fields,
        "workload": name}))``; ``matmul`` and ``embed`` hash their result tensor instead."""
        out = self._expect(out, self.output_model)
        dump = out.model_dump(mode="json", exclude_none=True)
        return keccak(canonical_json({"output": dump, "workload": self.name}))

    def _expect(self, value: BaseModel, model: type[ModelT]) -> ModelT:
        if not isinstance(value, model):
            raise InvalidInputError(
                self.name, f"{self.name} expects {model.__name__}, got {type(value).__name__}"
            )
        return value


def _registered() -> dict[str, list[EntryPoint]]:
    found: dict[str, list[EntryPoint]] = {}
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        same = found.setdefault(ep.name, [])
        if all(other.value != ep.value for other in same):
            same.append(ep)
    return found


def available_workloads() -> tuple[str, ...]:
    """Names registered under the ``proxima.workloads`` entry points, sorted."""
    return tuple(sorted(_registered()))


def _load_class(ep: EntryPoint) -> type[Workload]:
    try:
        obj = ep.load()
    except (ImportError, AttributeError) as err:
        raise WorkloadPluginError(ep.name, ep.value, f"cannot be imported: {err}") from err
    if not (isinstance(obj, type) and issubclass(obj, Workload)):
        raise WorkloadPluginError(ep.name, ep.value, f"{obj!r} is not a Workload subclass")
    if getattr(obj, "__abstractmethods__", None):
        missing = ", ".join(sorted(obj.__abstractmethods__))
        raise WorkloadPluginError(ep.name, ep.value, f"{obj.__name__} does not implement {missing}")
    if getattr(obj, "name", None) != ep.name:
        raise WorkloadPluginError(
            ep.name, ep.value, f"{obj.__name__}.name is {getattr(obj, 'name', None)!r}, not {ep.name!r}"
        )
    for attr in ("input_model", "output_model"):
        model = getattr(obj, attr, None)
        if not (isinstance(model, type) and issubclass(model, BaseModel)):
            raise WorkloadPluginError(ep.name, ep.value, f"{obj.__name__}.{attr} is not a pydantic model")
    return obj


def load_workloads(names: Iterable[str], device: Device = "cpu") -> dict[str, Workload]:
    """Create the named workloads from their entry points (not yet loaded: call ``load()`` on each).

    Args:
        names: Workload names; duplicates are ignored.
        device: The device every one computes on.

    Returns:
        Name -> workload, in the order asked.

    Raises:
        UnknownWorkloadError: If a name is not registered (the message lists those that are).
        WorkloadPluginError: If an entry point cannot be imported, is not a complete ``Workload`` subclass,
            or two distributions register one name differently.
        WorkloadUnavailableError: If ``device`` is unknown.
    """
    registered = _registered()
    workloads: dict[str, Workload] = {}
    for name in names:
        if name in workloads:
            continue
        candidates = registered.get(name)
        if not candidates:
            raise UnknownWorkloadError(name, registered)
        if len(candidates) > 1:
            values = ", ".join(ep.value for ep in candidates)
            raise WorkloadPluginError(name, values, "registered more than once with different values")
        cls = _load_class(candidates[0])
        workloads[name] = cls(device)
        log.debug(
            "workload created", extra={"workload": name, "device": device, "plugin": candidates[0].value}
        )
    return workloads
