"""The provider node: every long-lived part wired together and run under one trio nursery.

:class:`ProviderNode` is what ``proxima-node start`` runs. Start-up, in order:

1. probe the hardware and pick the device (``config.device``: auto, cpu or cuda);
2. benchmark it, or reuse the stored benchmark when it still describes this machine;
3. connect to the chain from the deployment file, register and stake if needed (top up to the stake asked
   for), and queue an attestation of the measured figures;
4. load the workloads, open the SQLite store, start the libp2p peer (dialing the bootstrap peers), the
   gossip validator, the offer book, the job server (which re-runs jobs a crash interrupted), the chain
   duties, the Vivaldi coordinate service, the advertiser and the metrics server;
5. write ``status.json`` in the data folder (addresses, peer id, metrics URL) and serve until stopped.

SIGINT or SIGTERM drains: new requests are answered ``unavailable``, admitted jobs finish, results of escrow
jobs are committed on chain, then everything closes. A second signal stops without waiting.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import trio
from eth_utils.crypto import keccak
from prometheus_client import Gauge

from proxima.node.advertiser import Advertiser
from proxima.node.benchmark import BenchmarkError, BenchmarkResult, benchmark_id_for, plan_for, run_benchmark
from proxima.node.config import NodeConfig
from proxima.node.coordinates import CoordinateService
from proxima.node.duties import ChainDuties, DutySettings
from proxima.node.errors import NodeError
from proxima.node.faults import FaultInjector
from proxima.node.hardware import HardwareProfile, probe_hardware, select_device
from proxima.node.identity import NodeIdentity
from proxima.node.jobserver import JobLimits, JobServer
from proxima.node.metrics import NodeMetrics
from proxima.node.payments import PaymentChecker
from proxima.node.store import NodeStore
from proxima.node.workloads.base import Device, Workload, load_workloads
from proxima.node.workloads.matmul import MatmulWorkload
from proxima.sdk.bindings import ProximaContracts
from proxima.sdk.bindings.registry import Role
from proxima.sdk.chain import Chain, Deployment, RpcChain
from proxima.sdk.jobs import Domains
from proxima.sdk.offers import (
    Offer,
    OfferBook,
    OfferCapacity,
    OfferCoordinates,
    OfferHardware,
    OfferMeasurement,
    OfferValidator,
    OfferWorkload,
    RejectReason,
    SignedOffer,
    StakeCache,
)
from proxima.sdk.p2p import OFFER_TOPIC, Peer, open_peer
from proxima.sdk.vivaldi import VivaldiCoordinate

if TYPE_CHECKING:  # trio's own annotations are shadowed by the trio-typing stubs that libp2p installs
    from trio_typing import TaskStatus

__all__ = [
    "STATUS_FILE_NAME",
    "UNDISCLOSED_COUNTRY",
    "FundingError",
    "NodeStatus",
    "ProviderNode",
    "connect_chain",
    "ensure_registered",
    "read_status",
]

log = logging.getLogger(__name__)

STATUS_FILE_NAME = "status.json"
UNDISCLOSED_COUNTRY = "ZZ"
"""Offers carry a country; ISO 3166 leaves ``ZZ`` for "unknown", used when the config names none."""

EPOCH_SECONDS = 3600
"""Attestation epochs are hours of chain time."""

_GAS_RESERVE_WEI = 10**14
"""Balance the account must keep beyond the stake, for the gas of registering (~100k gas at 1 gwei)."""


class FundingError(NodeError):
    """The provider's account cannot pay for the stake (and gas) it was asked to put up."""

    def __init__(self, address: str, balance: int, needed: int) -> None:
        super().__init__(
            f"account {address} holds {balance} wei but staking needs {needed} wei plus gas; send it ETH "
            "(on a local devnet: from an account `proxima-devnet` prints), then run the command again"
        )


@dataclass(frozen=True)
class NodeStatus:
    """What a running node writes to ``status.json`` (and ``proxima-node status`` reads)."""

    pid: int
    address: str
    peer_id: str
    addrs: tuple[str, ...]
    metrics_url: str | None
    region: str
    device: str
    started_at: float

    def to_json(self) -> str:
        return json.dumps(
            {
                "pid": self.pid,
                "address": self.address,
                "peer_id": self.peer_id,
                "addrs": list(self.addrs),
                "metrics_url": self.metrics_url,
                "region": self.region,
                "device": self.device,
                "started_at": self.started_at,
            },
            indent=2,
        )


def read_status(data_dir: Path) -> NodeStatus | None:
    """The status a node wrote in ``data_dir``, or None when none is running there.

    A status file left by a process that is gone (killed) is ignored.
    """
    path = data_dir / STATUS_FILE_NAME
    try:
        raw = json.loads(path.read_text())
        status = NodeStatus(
            pid=int(raw["pid"]),
            address=str(raw["address"]),
            peer_id=str(raw["peer_id"]),
            addrs=tuple(str(a) for a in raw["addrs"]),
            metrics_url=None if raw["metrics_url"] is None else str(raw["metrics_url"]),
            region=str(raw["region"]),
            device=str(raw["device"]),
            started_at=float(raw["started_at"]),
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None
    try:
        os.kill(status.pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        pass
    return status


def connect_chain(config: NodeConfig, identity: NodeIdentity) -> tuple[Chain, ProximaContracts, Deployment]:
    """Open the chain named by the config and bind the deployment's contracts.

    Raises:
        DeploymentFileError: If the deployment file is missing or malformed.
        ChainConnectionError: If nothing answers at the chain URL.
        NodeError: If the chain is not the one the deployment was made on.
    """
    deployment = Deployment.load(config.chain.deployment)
    chain = RpcChain(config.chain.url, accounts=[identity.account])
    if chain.chain_id != deployment.chain_id:
        chain.close()
        raise NodeError(
            f"the chain at {config.chain.url} has id {chain.chain_id} but {config.chain.deployment} was "
            f"deployed on chain {deployment.chain_id}; fix chain.url or chain.deployment in the config"
        )
    return chain, ProximaContracts.from_deployment(chain, deployment), deployment


def metadata_hash(config: NodeConfig, hardware: HardwareProfile) -> bytes:
    """The 32 bytes registered on chain: keccak of the node's public description (region, hardware)."""
    description = {"region": config.region, "country": config.country, "hardware": hardware.summary()}
    return keccak(json.dumps(description, sort_keys=True, separators=(",", ":")).encode())


def ensure_registered(
    contracts: ProximaContracts, identity: NodeIdentity, stake_wei: int, metadata: bytes
) -> int:
    """Register ``identity`` as a provider with ``stake_wei``, or top its stake up to it.

    Returns:
        The stake after the call, in wei.

    Raises:
        FundingError: If the account cannot pay.
        NodeError: If the account is registered as a verifier.
    """
    registry = contracts.registry
    account = registry.account_of(identity.address)
    minimum = registry.min_provider_stake()
    wanted = max(stake_wei, minimum)
    if account.role == Role.VERIFIER:
        raise NodeError(f"{identity.address} is registered as a verifier; a provider needs its own key")
    if account.role == Role.PROVIDER and account.stake >= wanted:
        return account.stake
    needed = wanted - account.stake if account.role == Role.PROVIDER else wanted
    balance = contracts.chain.balance(identity.address)
    if balance < needed + _GAS_RESERVE_WEI:
        raise FundingError(identity.address, balance, needed)
    if account.role == Role.PROVIDER:
        log.info("topping up stake", extra={"address": identity.address, "amount_wei": needed})
        registry.top_up(identity.account, needed)
    else:
        log.info("registering as provider", extra={"address": identity.address, "stake_wei": needed})
        registry.register(identity.account, identity.peer_id, metadata, needed)
    return registry.account_of(identity.address).stake


def _load_or_run_benchmark(config: NodeConfig, device: Device, *, quick: bool) -> BenchmarkResult:
    path = config.benchmark_path
    if path.exists():
        try:
            cached = BenchmarkResult.load(path)
        except (BenchmarkError, ValueError, OSError) as err:
            log.warning("stored benchmark unusable, measuring again", extra={"path": path, "error": str(err)})
        else:
            current = benchmark_id_for(device, cached.device_name, plan_for(device, quick=quick))
            if cached.device == device and cached.benchmark_id == current:
                log.info(
                    "benchmark reused",
                    extra={"gemm_flops": cached.gemm_flops, "mem_bandwidth": cached.mem_bandwidth},
                )
                return cached

    def progress(stage: str, fraction: float) -> None:
        log.info("benchmarking", extra={"stage": stage, "done": f"{fraction:.0%}"})

    result = run_benchmark(device, quick=quick, progress=progress)
    result.save(path)
    log.info(
        "benchmark measured",
        extra={
            "device": device,
            "gemm_flops": result.gemm_flops,
            "mem_bandwidth": result.mem_bandwidth,
            "seconds": round(result.duration_seconds, 2),
        },
    )
    return result


class ProviderNode:
    """A provider node: advertise, serve jobs, settle on chain.

    Args:
        config: The node's configuration.
        identity: Its key (from the keystore).
        quick_benchmark: Measure with the short benchmark plan (tests, demos).
        drain_timeout: Seconds a stop waits for admitted jobs.
        coordinate_interval: Seconds between Vivaldi rounds.
    """

    def __init__(
        self,
        config: NodeConfig,
        identity: NodeIdentity,
        *,
        quick_benchmark: bool = False,
        drain_timeout: float = 60.0,
        coordinate_interval: float = 5.0,
    ) -> None:
        self.config = config
        self.identity = identity
        self.quick_benchmark = quick_benchmark
        self.drain_timeout = drain_timeout
        self.coordinate_interval = coordinate_interval
        self.status: NodeStatus | None = None
        self.book = OfferBook()
        self._stop = trio.Event()
        self._faults: FaultInjector | None = None

    def _fault_injector(self) -> FaultInjector | None:
        """The configured fault injection, announced loudly; None for an honest node (the default)."""
        faults = self.config.faults
        if faults.wrong_matmul_rate <= 0:
            return None
        log.warning(
            "FAULT INJECTION ON: this node answers a share of matmul jobs with wrong results and signs them; "
            "it will be caught and slashed. For demos and tests only",
            extra={
                "fault_injection": True,
                "wrong_matmul_rate": faults.wrong_matmul_rate,
                "seed": faults.seed,
                "address": self.identity.address,
            },
        )
        return FaultInjector(faults.wrong_matmul_rate, faults.seed)

    def stop(self) -> None:
        """Ask a running node to drain and exit (what SIGINT does)."""
        self._stop.set()

    async def run(self, *, task_status: TaskStatus[NodeStatus] = trio.TASK_STATUS_IGNORED) -> None:
        """Start every part, serve until :meth:`stop` or SIGINT/SIGTERM, then drain and close.

        Raises:
            NodeError: And its subclasses, for start-up problems the operator must fix (funding, config).
        """
        config, identity = self.config, self.identity
        self._faults = self._fault_injector()
        log.info("probing hardware")
        hardware = await trio.to_thread.run_sync(probe_hardware)
        device = select_device(config.device, hardware)
        log.info("hardware", extra={"device": device, "summary": hardware.summary()})
        benchmark = await trio.to_thread.run_sync(
            lambda: _load_or_run_benchmark(config, device, quick=self.quick_benchmark)
        )

        log.info("connecting to chain", extra={"url": config.chain.url})
        chain, contracts, deployment = await trio.to_thread.run_sync(connect_chain, config, identity)
        with contextlib.ExitStack() as stack:
            stack.callback(chain.close)
            stake = await trio.to_thread.run_sync(
                ensure_registered,
                contracts,
                identity,
                config.chain.stake_wei,
                metadata_hash(config, hardware),
            )
            store = stack.enter_context(NodeStore(config.store_path))
            duties = ChainDuties(
                contracts,
                identity.account,
                store,
                DutySettings(
                    commit_margin=int(config.settlement.commit_margin_seconds),
                    redeem_threshold=config.settlement.voucher_redeem_threshold_wei,
                    redeem_interval=config.settlement.voucher_redeem_interval_seconds,
                ),
            )
            epoch = chain.now() // EPOCH_SECONDS
            duties.request_attestation([benchmark.measurement()], epoch)

            workloads = load_workloads(config.workloads, device)
            matmul = workloads.get("matmul")
            if isinstance(matmul, MatmulWorkload):
                matmul.limit_dimensions(config.limits.max_matmul_dim)
            for workload in workloads.values():
                log.info("loading workload", extra={"workload": workload.name})
                await trio.to_thread.run_sync(workload.load)

            metrics = NodeMetrics(tuple(workloads))
            metrics.set_info(
                version="0.1.0", address=identity.address, peer_id=identity.peer_id_b58, region=config.region
            )
            metrics.stake_wei.set(stake)
            metrics_url = None
            if config.metrics.enabled:
                stack.callback(metrics.close)
                host, port = metrics.serve(config.metrics.host, config.metrics.port)
                metrics_url = f"http://{host}:{port}/metrics"

            payments = PaymentChecker(
                contracts, identity.address, store, config.settlement.max_unredeemed_per_client_wei
            )
            stake_cache = StakeCache(contracts.registry.is_active_provider)

            def rejected(reason: RejectReason) -> None:
                metrics.offers_rejected.labels(reason=reason.value).inc()

            validator = OfferValidator(
                stake_cache, max_ttl=int(config.p2p.offer_ttl_seconds) + 30, on_reject=rejected
            )
            async with open_peer(
                identity.private_key,
                config.p2p.listen,
                bootstrap=config.p2p.bootstrap,
                announce=config.p2p.announce or None,
            ) as peer:
                await self._serve(
                    peer,
                    validator,
                    workloads,
                    payments,
                    store,
                    duties,
                    metrics,
                    Domains.from_deployment(deployment),
                    hardware,
                    benchmark,
                    device,
                    metrics_url,
                    task_status,
                )
            log.info("final commit of escrow results")
            with contextlib.suppress(Exception):
                await trio.to_thread.run_sync(duties.commit_pending)
        log.info("node stopped", extra={"address": identity.address})

    async def _serve(
        self,
        peer: Peer,
        validator: OfferValidator,
        workloads: dict[str, Workload],
        payments: PaymentChecker,
        store: NodeStore,
        duties: ChainDuties,
        metrics: NodeMetrics,
        domains: Domains,
        hardware: HardwareProfile,
        benchmark: BenchmarkResult,
        device: Device,
        metrics_url: str | None,
        task_status: TaskStatus[NodeStatus],
    ) -> None:
        config, identity = self.config, self.identity
        assert peer.pubsub is not None
        peer.pubsub.set_topic_validator(OFFER_TOPIC, validator, False)
        subscription = await peer.subscribe(OFFER_TOPIC)
        limits = JobLimits(
            max_request_bytes=config.limits.max_request_bytes,
            max_concurrency=config.capacity.max_concurrency,
            max_queue=config.capacity.max_queue,
            max_streams=max(256, config.capacity.max_concurrency + config.capacity.max_queue + 1),
            job_timeout=config.limits.job_timeout_seconds,
        )
        server = JobServer(
            peer,
            workloads,
            payments,
            store,
            identity.signer,
            domains,
            limits,
            metrics,
            dict(config.prices),
            faults=self._faults,
        )

        def remote_coordinate(peer_id: bytes) -> VivaldiCoordinate | None:
            signed = self.book.by_peer_id(peer_id)
            return None if signed is None else signed.offer.coordinate()

        coordinates = CoordinateService(peer, self.coordinate_interval, remote_coordinate)
        offer_hardware = _offer_hardware(hardware)
        measured = OfferMeasurement(
            benchmark_id="0x" + benchmark.benchmark_id.hex(),
            device=device,
            gemm_flops=benchmark.gemm_flops,
            mem_bandwidth=benchmark.mem_bandwidth,
        )
        offered = tuple(
            OfferWorkload(name=name, models=w.models(), unit_price_wei=config.prices[name])
            for name, w in sorted(workloads.items())
        )

        def make_offer(seq: int) -> Offer:
            now = int(time.time())
            load = server.load()
            running = min(load.running, config.capacity.max_concurrency)
            return Offer(
                provider=identity.address,
                peer_id=identity.peer_id_b58,
                addrs=tuple(peer.addrs()[:8]),
                region=config.region,
                country=config.country or UNDISCLOSED_COUNTRY,
                hardware=offer_hardware,
                measured=measured,
                workloads=offered,
                coordinates=OfferCoordinates.from_vivaldi(coordinates.current()),
                capacity=OfferCapacity(
                    max_concurrency=config.capacity.max_concurrency,
                    free_slots=config.capacity.max_concurrency - running,
                    queue_depth=load.queued,
                ),
                issued_at=now,
                expires_at=now + int(config.p2p.offer_ttl_seconds),
                seq=seq,
            )

        def published(signed: SignedOffer) -> None:
            metrics.offers_published.inc()

        advertiser = Advertiser(
            peer,
            identity.signer,
            make_offer,
            config.p2p.heartbeat_seconds,
            min_interval=min(1.0, config.p2p.heartbeat_seconds),
            on_publish=published,
        )

        offers_known = Gauge(
            "proxima_node_offers_known",
            "Valid unexpired offers of other providers this node follows.",
            registry=metrics.registry,
        )
        offers_known.set_function(
            lambda: sum(s.offer.provider != identity.address for s in self.book.offers(time.time()))
        )

        async with trio.open_nursery() as nursery:
            await nursery.start(server.run)
            nursery.start_soon(duties.run)
            nursery.start_soon(self.book.follow, subscription)
            nursery.start_soon(coordinates.run)
            nursery.start_soon(advertiser.run)
            nursery.start_soon(self._watch_load, server, advertiser, duties, metrics)
            self.status = NodeStatus(
                pid=os.getpid(),
                address=identity.address,
                peer_id=identity.peer_id_b58,
                addrs=tuple(peer.addrs()),
                metrics_url=metrics_url,
                region=config.region,
                device=device,
                started_at=time.time(),
            )
            with _status_file(config.data_dir, self.status):
                log.info(
                    "node ready",
                    extra={
                        "address": identity.address,
                        "peer_id": identity.peer_id_b58,
                        "addrs": ",".join(peer.addrs()),
                        "metrics": metrics_url or "off",
                    },
                )
                task_status.started(self.status)
                await self._wait_for_stop()
                log.info("stopping: draining jobs", extra={"timeout_s": self.drain_timeout})
                with (
                    trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as again,
                    trio.CancelScope() as drain_scope,
                ):

                    async def second_signal() -> None:
                        async for _ in again:
                            log.warning("second signal: stopping without waiting for jobs")
                            drain_scope.cancel()
                            return

                    async with trio.open_nursery() as inner:
                        inner.start_soon(second_signal)
                        await server.drain(self.drain_timeout)
                        inner.cancel_scope.cancel()
                nursery.cancel_scope.cancel()

    async def _wait_for_stop(self) -> None:
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async with trio.open_nursery() as nursery:

                async def on_signal() -> None:
                    async for signum in signals:
                        log.info("signal received", extra={"signal": signal.Signals(signum).name})
                        self._stop.set()
                        return

                nursery.start_soon(on_signal)
                await self._stop.wait()
                nursery.cancel_scope.cancel()

    async def _watch_load(
        self, server: JobServer, advertiser: Advertiser, duties: ChainDuties, metrics: NodeMetrics
    ) -> None:
        """Re-advertise when free capacity changes; wake the duties when jobs finish."""
        last = server.load()
        while True:
            await trio.sleep(0.25)
            load = server.load()
            metrics.queue_depth.set(load.queued)
            metrics.in_flight.set(load.running)
            if (load.running, load.queued) != (last.running, last.queued):
                advertiser.trigger()
                if load.running + load.queued < last.running + last.queued:
                    duties.wake()
            last = load


def _offer_hardware(hardware: HardwareProfile) -> OfferHardware:
    gpu_fields: dict[str, Any] = {}
    if hardware.gpus:
        first = hardware.gpus[0]
        gpu_fields = {
            "gpu_model": first.name[:128],
            "gpu_count": len([g for g in hardware.gpus if g.name == first.name]),
            "gpu_memory_bytes": first.memory_bytes,
        }
    return OfferHardware(
        cpu_model=hardware.cpu.model[:128] or "unknown",
        cpu_cores=hardware.cpu.logical_threads,
        memory_bytes=hardware.cpu.memory_bytes,
        **gpu_fields,
    )


@contextlib.contextmanager
def _status_file(data_dir: Path, status: NodeStatus) -> Iterator[Path]:
    path = data_dir / STATUS_FILE_NAME
    tmp = path.with_suffix(".tmp")
    tmp.write_text(status.to_json())
    tmp.replace(path)
    try:
        yield path
    finally:
        path.unlink(missing_ok=True)
