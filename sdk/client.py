"""The client library: submit jobs to the Proxima market and get verified results.

Two modes, one implementation:

* **gateway**: ``await AsyncClient.connect("http://127.0.0.1:8080", api_key="pxk_...")`` talks to a gateway's
  REST API (an API key, or ``signer=`` an ``eth_account`` key that signs every request);
* **embedded**: ``await AsyncClient.embedded(settings)`` runs the gateway's own services in this process
  (``proxima.marketplace.embedded``, loaded on demand): its own libp2p host following the offer book, the
  same matching engine, the same dispatcher, paying providers from the client's own voucher deposit. The
  same inputs get the same placements as at a gateway.

Everything else is shared: a job handle (:class:`AsyncJob`: ``status``, ``result``, ``receipt``, ``timing``,
``placement``, ``cancel``), :meth:`AsyncClient.map` for many jobs with a progress bar, budgets per job and per
session enforced *before* a job is sent (the cost is estimated from the live offers: billing units times unit
price), a low-deposit warning with optional automatic top-up, and verification of every result on the
client: the workload's schema, the provider's signed receipt (its result hash and signature), and the
workload's own check (Freivalds' algorithm for matmul, :mod:`proxima.sdk.verification`).

:class:`Client` and :class:`Job` are the same API, synchronous: they run an :class:`AsyncClient` on a private
event loop in a thread.

Example:
    >>> from proxima.sdk import Client, JobSpec
    >>> with Client.connect("http://127.0.0.1:8080", api_key="pxk_...") as client:  # doctest: +SKIP
    ...     job = client.submit(JobSpec.matmul(512, seed=7))
    ...     c = job.result(timeout=60).c.to_array()
    ...     print(job.placement.provider, job.timing.total)
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
import math
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from eth_account.signers.local import LocalAccount
from pydantic import BaseModel

from proxima.sdk._client_errors import (
    AuthenticationError,
    BudgetExceededError,
    ClientClosedError,
    ClientError,
    GatewayConnectionError,
    GatewayError,
    InsufficientDepositError,
    InvalidSpecError,
    JobCancelledError,
    JobError,
    JobFailedError,
    JobNotFoundError,
    JobTimeoutError,
    NoProviderError,
    RateLimitedError,
    UnsupportedOperationError,
    VerificationFailedError,
)
from proxima.sdk._client_models import (
    AccountInfo,
    Constraints,
    DepositInfo,
    JobOutcome,
    JobSpec,
    JobSpecInput,
    OfferInfo,
    Placement,
    Timing,
)
from proxima.sdk._client_transport import TERMINAL, GatewayTransport, Transport
from proxima.sdk.eip712 import Domain
from proxima.sdk.errors import SignatureError
from proxima.sdk.jobs import JobResult, verify_receipt
from proxima.sdk.verification import DEFAULT_ROUNDS, CheckResult, VerificationError, verify_output
from proxima.sdk.workloads import WorkloadSpecError, check_output, parse_output, result_hash

if TYPE_CHECKING:
    from proxima.marketplace.embedded import EmbeddedSettings

__all__ = [
    "AccountInfo",
    "AsyncClient",
    "AsyncJob",
    "AuthenticationError",
    "BudgetExceededError",
    "Client",
    "ClientClosedError",
    "ClientError",
    "Constraints",
    "DepositInfo",
    "Estimate",
    "GatewayConnectionError",
    "GatewayError",
    "InsufficientDepositError",
    "InvalidSpecError",
    "Job",
    "JobCancelledError",
    "JobError",
    "JobFailedError",
    "JobNotFoundError",
    "JobOutcome",
    "JobSpec",
    "JobSpecInput",
    "JobTimeoutError",
    "NoProviderError",
    "OfferInfo",
    "Placement",
    "RateLimitedError",
    "SessionBudget",
    "Timing",
    "UnsupportedOperationError",
    "VerificationFailedError",
]

log = logging.getLogger("proxima.sdk.client")

EMBEDDED_MODULE = "proxima.marketplace.embedded"
"""Where embedded mode lives (imported on demand: the SDK does not depend on the marketplace package)."""

_T = TypeVar("_T")
_INLINE_VERIFY_ELEMENTS = 256 * 256
"""Results up to this many elements are verified on the event loop; larger ones in a worker thread."""


# --- budgets ------------------------------------------------------------------------------------------------


class Estimate(BaseModel):
    """What a job may cost at the live offers, before it is sent.

    Attributes:
        units: Billing units of the job.
        offers: Live offers that serve its workload, model and residency.
        cheapest_wei: Cost at the cheapest qualifying offers (``redundancy`` of them).
        highest_wei: Cost at the most expensive qualifying offer, times ``redundancy`` (what a gateway
            reserves for a job without a price cap).
    """

    units: int
    offers: int
    cheapest_wei: int
    highest_wei: int


class SessionBudget(BaseModel):
    """This client's own spending limit and what it used.

    Attributes:
        limit_wei: The session budget (None: unlimited).
        reserved_wei: Held by jobs submitted and not yet seen finished (their worst case).
        spent_wei: Charged for delivered results, as the market reported.
    """

    limit_wei: int | None
    reserved_wei: int
    spent_wei: int

    @property
    def available_wei(self) -> int | None:
        """What is left (None: unlimited)."""
        if self.limit_wei is None:
            return None
        return max(self.limit_wei - self.reserved_wei - self.spent_wei, 0)


# --- the job handle -----------------------------------------------------------------------------------------


class AsyncJob:
    """A submitted job: read its state with :meth:`status`, wait with :meth:`result`, stop it with
    :meth:`cancel`.

    The properties (:attr:`placement`, :attr:`timing`, :attr:`receipt`...) show the job as last read.
    """

    def __init__(
        self, client: AsyncClient, spec: JobSpec, data: dict[str, Any], submit_ms: float | None
    ) -> None:
        self._client = client
        self.spec = spec
        self.id: str = str(data["id"])
        self._data = data
        self._submit_ms = submit_ms
        self._submitted = time.perf_counter()
        self._output: BaseModel | None = None
        self._check: CheckResult | None = None
        self._verify_ms: float | None = None
        self._end_to_end_ms: float | None = None
        self._verify_lock = asyncio.Lock()

    def __repr__(self) -> str:
        return f"AsyncJob({self.id}, {self.state})"

    # --- state as last read ---

    @property
    def data(self) -> Mapping[str, Any]:
        """The job's JSON as last read (the gateway's ``JobPublic``)."""
        return self._data

    @property
    def state(self) -> str:
        """Status as last read: ``queued``, ``placed``, ``running``, ``succeeded``, ``failed`` or
        ``cancelled``."""
        return str(self._data.get("status", "unknown"))

    @property
    def done(self) -> bool:
        """Whether the job is final (as last read)."""
        return self.state in TERMINAL

    @property
    def placement(self) -> Placement | None:
        """Where it runs (or ran) and why: provider, region, backups, the engine's explanation."""
        return Placement.from_job(self._data)

    @property
    def timing(self) -> Timing:
        """Time per phase (ms): the market's match/dispatch/queue/compute/verify/settle/total and this
        client's submit, verification and end-to-end times."""
        return Timing.from_job(
            self._data,
            submit=self._submit_ms,
            client_verify=self._verify_ms,
            end_to_end=self._end_to_end_ms,
        )

    @property
    def receipt(self) -> Mapping[str, Any] | None:
        """The provider's signed receipt (``{"message", "signature", "domain"}``), once delivered."""
        receipt = self._data.get("receipt")
        return receipt if isinstance(receipt, Mapping) else None

    @property
    def provider(self) -> str | None:
        """The provider that delivered the result."""
        provider = self._data.get("provider")
        return None if provider is None else str(provider)

    @property
    def price_wei(self) -> int | None:
        """The agreed price."""
        return _int_or_none(self._data.get("price_wei"))

    @property
    def charged_wei(self) -> int | None:
        """What the job cost (only a delivered result is charged)."""
        return _int_or_none(self._data.get("charged_wei"))

    @property
    def cached(self) -> bool:
        """Whether the market answered from its verified result cache."""
        return bool(self._data.get("cached"))

    @property
    def verification(self) -> CheckResult | None:
        """This client's own check of the result (None before it, or for workloads without a cheap check:
        their receipt and shape are still checked)."""
        return self._check

    @property
    def market_verification(self) -> Mapping[str, Any] | None:
        """The market's own check of the result (``{"method", "passed", "detail", ...}``), when it reports
        one."""
        value = self._data.get("verification")
        return value if isinstance(value, Mapping) else None

    # --- calls ---

    async def refresh(self) -> Mapping[str, Any]:
        """Read the job again; its JSON."""
        self._update(await self._client._call(self._client._transport.job(self.id)))
        return self._data

    async def status(self) -> str:
        """The job's status now (read from the market)."""
        await self.refresh()
        return self.state

    async def wait(self, timeout: float | None = None) -> Mapping[str, Any]:
        """Wait until the job is final or ``timeout`` seconds passed; its JSON (final or not)."""
        if not self.done:
            self._update(await self._client._call(self._client._transport.wait(self.id, timeout)))
        return self._data

    async def result(self, timeout: float | None = None) -> BaseModel:
        """Wait for the job and return its verified output (``MatmulOutput``, ``EmbedOutput``).

        Args:
            timeout: Seconds to wait (None: the client's ``default_timeout``).

        Raises:
            JobTimeoutError: Not finished in time (it continues: wait again or cancel it).
            JobFailedError: The market could not run it (its ``code`` and ``message``); nothing was charged.
            JobCancelledError: It was cancelled.
            VerificationFailedError: The result failed this client's verification.
            GatewayError: The market could not be asked.
        """
        wait = self._client.default_timeout if timeout is None else timeout
        await self.wait(wait)
        status = self.state
        if status == "succeeded":
            return await self._verified()
        if status == "failed":
            error = self._data.get("error") or {}
            code, message = str(error.get("code", "failed")), str(error.get("message", ""))
            if code == "budget":
                raise BudgetExceededError("gateway", self.price_wei or 0, 0, message)
            raise JobFailedError(self.id, code, message, [dict(a) for a in self._data.get("attempts", ())])
        if status == "cancelled":
            raise JobCancelledError(self.id)
        raise JobTimeoutError(self.id, math.inf if wait is None else wait, status)

    async def cancel(self) -> bool:
        """Cancel the job (nothing is charged for it). Returns whether it was cancelled now (False: it had
        already finished)."""
        data = await self._client._call(self._client._transport.cancel(self.id))
        if data is None:
            await self.refresh()
            return False
        self._update(data)
        return self.state == "cancelled"

    # --- internals ---

    def _update(self, data: dict[str, Any]) -> None:
        was_done = self.done
        self._data = data
        if self.done and not was_done:
            self._client._settled(self)

    async def _verified(self) -> BaseModel:
        async with self._verify_lock:
            if self._output is None:
                started = time.perf_counter()
                output, check = await self._client._verify(self.spec, self._data)
                self._verify_ms = (time.perf_counter() - started) * 1000
                self._end_to_end_ms = (time.perf_counter() - self._submitted) * 1000
                self._output, self._check = output, check
            return self._output


# --- the client ---------------------------------------------------------------------------------------------


class AsyncClient:
    """The asynchronous client (asyncio). Open one with :meth:`connect` (gateway) or :meth:`embedded`.

    Args:
        transport: How the market is reached (:class:`~proxima.sdk._client_transport.GatewayTransport` or
            the embedded market).
        verify: Verify every result on the client (schema, signed receipt, the workload's own check).
        verify_rounds: Freivalds rounds for matmul results (false acceptance at most 2**-rounds).
        session_budget_wei: The most this client may spend in total (None: no limit of its own).
        max_job_wei: The most any one job may cost (None: only the job's own caps).
        low_deposit_wei: Warn (``logging.warning``, structured) when the deposit (embedded) or the gateway
            budget's available amount drops below this.
        auto_top_up_wei: Embedded mode: deposit this much whenever the deposit drops below
            ``low_deposit_wei`` or cannot pay for a job.
        default_timeout: Seconds :meth:`AsyncJob.result` waits when not told (None: no limit).
        offers_ttl: Seconds the live offers read for budget estimates are reused.
    """

    def __init__(
        self,
        transport: Transport,
        *,
        verify: bool = True,
        verify_rounds: int = DEFAULT_ROUNDS,
        session_budget_wei: int | None = None,
        max_job_wei: int | None = None,
        low_deposit_wei: int | None = None,
        auto_top_up_wei: int | None = None,
        default_timeout: float | None = 600.0,
        offers_ttl: float = 2.0,
    ) -> None:
        for name, value in (
            ("session_budget_wei", session_budget_wei),
            ("max_job_wei", max_job_wei),
            ("low_deposit_wei", low_deposit_wei),
            ("auto_top_up_wei", auto_top_up_wei),
        ):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
                raise InvalidSpecError(name, f"must be a non-negative integer of wei, got {value!r}")
        if (
            isinstance(verify_rounds, bool)
            or not isinstance(verify_rounds, int)
            or not 1 <= verify_rounds <= 64
        ):
            raise InvalidSpecError("verify_rounds", f"must be an integer from 1 to 64, got {verify_rounds!r}")
        if auto_top_up_wei is not None and transport.mode != "embedded":
            raise UnsupportedOperationError("auto_top_up_wei", "automatic top-up needs embedded mode")
        self._transport = transport
        self.verify = verify
        self.verify_rounds = verify_rounds
        self.max_job_wei = max_job_wei
        self.low_deposit_wei = low_deposit_wei
        self.auto_top_up_wei = auto_top_up_wei
        self.default_timeout = default_timeout
        self.offers_ttl = offers_ttl
        self._session_limit = session_budget_wei
        self._reserved: dict[str, int] = {}
        self._spent = 0
        self._budget_lock = asyncio.Lock()
        self._offers: dict[str | None, tuple[float, list[OfferInfo]]] = {}
        self._deposit: tuple[float, DepositInfo] | None = None
        self._voucher_pending: dict[str, tuple[float, int]] = {}
        self._deposit_lock = asyncio.Lock()
        self._low_warned = False
        self._checks: set[asyncio.Task[None]] = set()
        self._closed = False
        self._owns_transport = True
        self._options: dict[str, Any] = {
            "verify": verify,
            "verify_rounds": verify_rounds,
            "session_budget_wei": session_budget_wei,
            "max_job_wei": max_job_wei,
            "low_deposit_wei": low_deposit_wei,
            "auto_top_up_wei": auto_top_up_wei,
            "default_timeout": default_timeout,
            "offers_ttl": offers_ttl,
        }

    def __repr__(self) -> str:
        return f"AsyncClient({self._transport!r})"

    # --- opening and closing ---

    @classmethod
    async def connect(
        cls,
        gateway_url: str,
        *,
        api_key: str | None = None,
        signer: LocalAccount | None = None,
        timeout: float = 30.0,
        **options: Any,
    ) -> AsyncClient:
        """A client of a gateway; checks the credentials with ``GET /v1/account``.

        Args:
            gateway_url: The gateway's URL (``http://127.0.0.1:8080``).
            api_key: An API key from ``proxima-gateway add-client``; or
            signer: the client's own key (``eth_account.Account.from_key(...)``): every request is signed
                (EIP-191), no key is sent.
            timeout: Seconds for one HTTP exchange.
            options: :class:`AsyncClient` options (``session_budget_wei``, ``verify_rounds``...).

        Raises:
            AuthenticationError: If the gateway refuses the credentials.
            GatewayConnectionError: If the gateway cannot be reached.
        """
        transport = GatewayTransport(gateway_url, api_key=api_key, signer=signer, timeout=timeout)
        try:
            client = cls(transport, **options)
            await client.account()
        except BaseException:
            await transport.aclose()
            raise
        log.info("client connected", extra={"mode": "gateway", "url": transport.base_url})
        return client

    @classmethod
    async def embedded(
        cls, settings: EmbeddedSettings | Mapping[str, Any] | str | Path, **options: Any
    ) -> AsyncClient:
        """A client that runs the market itself, in this process (no gateway).

        Starts the gateway's services here: a libp2p host following the offer book (and pinging providers),
        the chain state, the matching engine and the dispatcher, paying providers from the client's own
        account (vouchers from its ``PaymentVouchers`` deposit, or an escrow per job).

        Args:
            settings: ``proxima.marketplace.embedded.EmbeddedSettings``, a mapping of its fields, or a TOML
                file of them (the gateway's settings: ``chain``, ``payer`` = the client's paying account,
                ``p2p``, ``matching``, ``data_dir``...).
            options: :class:`AsyncClient` options.

        Raises:
            ClientError: If the embedded market cannot start (its error, chained).
        """
        module = importlib.import_module(EMBEDDED_MODULE)
        transport: Transport = await module.EmbeddedMarket.start(settings)
        try:
            client = cls(transport, **options)
            await client._check_deposit()
        except BaseException:
            await transport.aclose()
            raise
        log.info("client started embedded", extra={"mode": "embedded"})
        return client

    async def aclose(self) -> None:
        """Stop following jobs and close the connections (embedded: stop the market's services; jobs still
        running are resumed by the next embedded client on the same ``data_dir``)."""
        if self._closed:
            return
        self._closed = True
        for task in list(self._checks):
            task.cancel()
        if self._owns_transport:
            await self._transport.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def session(self, **options: Any) -> AsyncClient:
        """A new session over the same market connection: its own session budget and options.

        Closing the session leaves this client (and its connection or embedded market) open; closing this
        client ends the connection for every session.

        Args:
            options: :class:`AsyncClient` options that differ from this client's (``session_budget_wei``,
                ``max_job_wei``, ``low_deposit_wei``, ``auto_top_up_wei``, ``verify_rounds``...).
        """
        self._check_open()
        session = type(self)(self._transport, **{**self._options, **options})
        session._owns_transport = False
        return session

    @property
    def mode(self) -> str:
        """``"gateway"`` or ``"embedded"``."""
        return self._transport.mode

    # --- market ---

    async def offers(self, workload: str | None = None, *, fresh: bool = False) -> list[OfferInfo]:
        """Live offers (all, or those serving ``workload``), by provider address.

        Args:
            workload: Keep offers serving it.
            fresh: Read them now instead of reusing a read younger than ``offers_ttl``.
        """
        now = time.monotonic()
        cached = self._offers.get(workload)
        if cached is not None and not fresh and now - cached[0] < self.offers_ttl:
            return cached[1]
        raw = await self._call(self._transport.offers(workload))
        offers = sorted((OfferInfo.from_json(o) for o in raw), key=lambda o: o.provider)
        self._offers[workload] = (now, offers)
        return offers

    async def wait_ready(
        self,
        min_offers: int = 1,
        *,
        workload: str | None = None,
        measured: bool = False,
        timeout: float = 30.0,
    ) -> list[OfferInfo]:
        """Wait until the market sees at least ``min_offers`` live offers (serving ``workload``).

        Args:
            min_offers: Offers to wait for.
            workload: Count only offers serving it.
            measured: Also wait until the market measured its round trip to each of them (placements by
                latency are then stable).
            timeout: Seconds to wait.

        Returns:
            The offers.

        Raises:
            JobTimeoutError: Not ready in time (``job_id`` ``"market"``).
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            offers = await self.offers(workload, fresh=True)
            ready = len(offers) >= min_offers
            if ready and measured:
                rtts = await asyncio.gather(*(self._transport.measured_rtt_ms(o.provider) for o in offers))
                ready = all(rtt is not None for rtt in rtts)
            if ready:
                return offers
            if loop.time() >= deadline:
                raise JobTimeoutError("market", timeout, f"{len(offers)} offer(s) seen, {min_offers} wanted")
            await asyncio.sleep(0.2)

    async def estimate(self, spec: JobSpecInput) -> Estimate:
        """What a job may cost at the live offers (billing units x unit price), without sending it.

        Raises:
            InvalidSpecError: If the spec is invalid.
            NoProviderError: If fewer live offers than ``redundancy`` serve it.
        """
        job_spec = JobSpec.of(spec)
        return await self._estimate(job_spec)

    async def _estimate(self, spec: JobSpec) -> Estimate:
        units = spec.units
        prices = sorted(
            price * units
            for offer in await self.offers(spec.workload)
            if (price := offer.serves(spec)) is not None
        )
        if len(prices) < spec.redundancy:
            c = spec.constraints
            where = f" in {', '.join(sorted({*c.countries, *c.regions}))}" if c.countries or c.regions else ""
            raise NoProviderError(
                503,
                "no_provider",
                f"{len(prices)} live offer(s) serve {spec.workload}{where}, {spec.redundancy} needed; "
                "retry later or relax the constraints (nothing was sent)",
            )
        return Estimate(
            units=units,
            offers=len(prices),
            cheapest_wei=sum(prices[: spec.redundancy]),
            highest_wei=prices[-1] * spec.redundancy,
        )

    # --- money ---

    @property
    def budget(self) -> SessionBudget:
        """This client's session budget: limit, reserved by unfinished jobs, spent."""
        return SessionBudget(
            limit_wei=self._session_limit, reserved_wei=sum(self._reserved.values()), spent_wei=self._spent
        )

    async def account(self) -> AccountInfo:
        """The account at the market: budget, spent, reserved, available (and the deposit, embedded)."""
        data = await self._call(self._transport.account())
        deposit = await self._call(self._transport.deposit())
        return AccountInfo(
            address=str(data["address"]),
            budget_wei=int(data["budget_wei"]),
            spent_wei=int(data["spent_wei"]),
            reserved_wei=int(data["reserved_wei"]),
            available_wei=int(data["available_wei"]),
            deposit=deposit,
        )

    async def deposit(self) -> DepositInfo | None:
        """The voucher deposit that pays providers (embedded mode; None at a gateway)."""
        info = await self._call(self._transport.deposit())
        if info is not None:
            self._deposit = (time.monotonic(), info)
            self._voucher_pending.clear()
        return info

    async def fund(self, amount_wei: int) -> DepositInfo:
        """Deposit ``amount_wei`` into ``PaymentVouchers`` from the client's account (embedded mode).

        Escrow jobs (``payment="escrow"``) need no deposit: each opens its own escrow when it is placed.

        Raises:
            UnsupportedOperationError: At a gateway (its operator pays providers and sets your budget).
            InvalidSpecError: If the amount is not a positive integer.
        """
        if isinstance(amount_wei, bool) or not isinstance(amount_wei, int) or amount_wei <= 0:
            raise InvalidSpecError("amount_wei", f"must be a positive integer of wei, got {amount_wei!r}")
        info = await self._call(self._transport.fund(amount_wei))
        self._deposit = (time.monotonic(), info)
        self._voucher_pending.clear()
        if self.low_deposit_wei is not None and info.available_wei >= self.low_deposit_wei:
            self._low_warned = False
        log.info("deposit funded", extra={"amount_wei": amount_wei, "available_wei": info.available_wei})
        return info

    async def _check_deposit(self) -> None:
        """Warn when the deposit (or gateway budget) is low; top it up when configured to."""
        if self.low_deposit_wei is None:
            return
        info = await self.deposit()
        available = (await self.account()).available_wei if info is None else info.available_wei
        if available >= self.low_deposit_wei:
            self._low_warned = False
            return
        if self.auto_top_up_wei:
            async with self._deposit_lock:
                info = await self.deposit()
                if info is not None and info.available_wei < self.low_deposit_wei:
                    log.warning(
                        "low deposit: topping up",
                        extra={
                            "mode": self.mode,
                            "available_wei": info.available_wei,
                            "threshold_wei": self.low_deposit_wei,
                            "top_up_wei": self.auto_top_up_wei,
                        },
                    )
                    await self.fund(self.auto_top_up_wei)
            return
        if not self._low_warned:
            self._low_warned = True
            log.warning(
                "low deposit" if info is not None else "low gateway budget",
                extra={"mode": self.mode, "available_wei": available, "threshold_wei": self.low_deposit_wei},
            )

    async def _deposit_available(self) -> int | None:
        """The deposit available for new voucher jobs: the last read (at most a second old) less the caps of
        voucher jobs submitted since (None at a gateway)."""
        now = time.monotonic()
        if (self._deposit is None or now - self._deposit[0] > 1.0) and await self.deposit() is None:
            return None
        assert self._deposit is not None
        read_at, info = self._deposit
        pending = sum(cap for at, cap in self._voucher_pending.values() if at >= read_at)
        return info.available_wei - pending

    async def _reserve(self, spec: JobSpec, estimate: Estimate) -> int:
        """Check the job against every budget and hold its worst case in the session; the cap to send.

        Raises:
            BudgetExceededError: If the cheapest qualifying offer is over the job's caps or the session's
                remainder.
            InsufficientDepositError: If the voucher deposit cannot pay for it (embedded).
        """
        caps = [
            c
            for c in (
                spec.budget_wei,
                None if spec.max_price_wei is None else spec.max_price_wei * spec.redundancy,
                self.max_job_wei,
            )
            if c is not None
        ]
        job_cap = min(caps) if caps else None
        if job_cap is not None and estimate.cheapest_wei > job_cap:
            raise BudgetExceededError(
                "job",
                estimate.cheapest_wei,
                job_cap,
                f"the cheapest of {estimate.offers} qualifying offer(s) costs {estimate.cheapest_wei} wei "
                f"for {estimate.units} unit(s); nothing was sent",
            )
        cap = estimate.highest_wei if job_cap is None else min(job_cap, estimate.highest_wei)
        session = self.budget.available_wei
        if session is not None:
            if estimate.cheapest_wei > session:
                raise BudgetExceededError(
                    "session",
                    estimate.cheapest_wei,
                    session,
                    f"session budget {self._session_limit} wei, {self._spent} spent, "
                    f"{self.budget.reserved_wei} held by unfinished jobs; nothing was sent",
                )
            cap = min(cap, session)
        if spec.payment == "voucher" and self._transport.mode == "embedded":
            available = await self._deposit_available()
            if available is not None and available < cap:
                if self.auto_top_up_wei:
                    await self.fund(max(self.auto_top_up_wei, cap - available))
                    available = await self._deposit_available()
                if available is not None and available < cap:
                    raise InsufficientDepositError(cap, max(available, 0))
        return cap

    def _settled(self, job: AsyncJob) -> None:
        """A job was seen final: its session hold becomes what it was charged."""
        held = self._reserved.pop(job.id, None)
        self._voucher_pending.pop(job.id, None)
        if held is None:
            return
        self._spent += job.charged_wei or 0
        if self.low_deposit_wei is not None and not self._closed:
            task = asyncio.get_running_loop().create_task(self._check_deposit_quietly())
            self._checks.add(task)
            task.add_done_callback(self._checks.discard)

    async def _check_deposit_quietly(self) -> None:
        try:
            await self._check_deposit()
        except ClientError as err:
            log.warning("cannot check the deposit", extra={"error": str(err)})

    # --- jobs ---

    async def submit(self, spec: JobSpecInput) -> AsyncJob:
        """Send a job; it runs in the background (see :class:`AsyncJob`).

        Before anything is sent, the job's cost is estimated from the live offers (billing units x unit
        price) and checked against the job's own caps (``max_price_wei``, ``budget_wei``), the client's
        ``max_job_wei`` and the session budget; the job then goes out with ``budget_wei`` set to what it may
        cost, so the market can never charge more.

        Args:
            spec: A :class:`JobSpec`, or a mapping of its fields.

        Raises:
            InvalidSpecError: If the spec is invalid (nothing was sent).
            BudgetExceededError: If a budget does not allow the job (nothing was sent, nothing reserved).
            NoProviderError: If no live offer can serve it.
            GatewayError: If the market refused it.
        """
        self._check_open()
        job_spec = JobSpec.of(spec)
        estimate = await self._estimate(job_spec)
        key = f"sdk-{uuid.uuid4().hex}"
        async with self._budget_lock:
            cap = await self._reserve(job_spec, estimate)
            self._reserved[key] = cap
        started = time.perf_counter()
        try:
            data = await self._call(
                self._transport.submit(job_spec.body(budget_wei=cap, idempotency_key=key))
            )
        except BaseException:
            self._reserved.pop(key, None)
            raise
        submit_ms = (time.perf_counter() - started) * 1000
        job = AsyncJob(self, job_spec, data, submit_ms)
        self._reserved[job.id] = self._reserved.pop(key)
        if job_spec.payment == "voucher":
            self._voucher_pending[job.id] = (time.monotonic(), cap)
        if job.done:
            self._settled(job)
        log.debug("job submitted", extra={"job_id": job.id, "workload": job_spec.workload, "cap_wei": cap})
        return job

    async def job(self, job_id: str, spec: JobSpecInput) -> AsyncJob:
        """A handle on an earlier job of this client (to follow it after a restart).

        Args:
            job_id: Its id.
            spec: Its spec (results are verified against its input).

        Raises:
            JobNotFoundError: If the market has no such job for this client.
        """
        data = await self._call(self._transport.job(job_id))
        return AsyncJob(self, JobSpec.of(spec), data, None)

    async def run(self, spec: JobSpecInput, *, timeout: float | None = None) -> BaseModel:
        """Submit a job and return its verified output (``submit`` then ``result``)."""
        job = await self.submit(spec)
        return await job.result(timeout)

    async def map(
        self,
        specs: Iterable[JobSpecInput],
        *,
        progress: bool = True,
        concurrency: int = 32,
        timeout: float | None = None,
        raise_errors: bool = False,
    ) -> list[JobOutcome]:
        """Run many jobs concurrently; their outcomes in the order of ``specs``.

        Args:
            specs: The jobs.
            progress: Show a progress bar on stderr (rich).
            concurrency: Jobs in flight at once.
            timeout: Seconds each job's result is waited for (None: ``default_timeout``).
            raise_errors: Raise the first job's error (in order) after all finished, instead of returning it
                in its outcome.

        Returns:
            One :class:`JobOutcome` per spec: its result, or the error that stopped it (a budget refusal, a
            failure, a failed verification...).
        """
        self._check_open()
        items = list(specs)
        if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
            raise InvalidSpecError("concurrency", f"must be a positive integer, got {concurrency!r}")
        outcomes = [JobOutcome(index=i) for i in range(len(items))]
        slots = asyncio.Semaphore(concurrency)
        bar = _Progress(len(items), enabled=progress)

        async def one(i: int, spec: JobSpecInput) -> None:
            outcome = outcomes[i]
            async with slots:
                job: AsyncJob | None = None
                try:
                    job = await self.submit(spec)
                    outcome.job_id = job.id
                    outcome.result = await job.result(timeout)
                except ClientError as err:
                    outcome.error = err
                finally:
                    if job is not None:
                        outcome.placement = job.placement
                        outcome.timing = job.timing
                        outcome.charged_wei = job.charged_wei
                        outcome.verification = job.verification
            bar.advance(outcome.ok)

        with bar:
            async with asyncio.TaskGroup() as group:
                for i, spec in enumerate(items):
                    group.create_task(one(i, spec))
        if raise_errors:
            for outcome in outcomes:
                if outcome.error is not None:
                    raise outcome.error
        return outcomes

    # --- verification ---

    async def _verify(self, spec: JobSpec, data: Mapping[str, Any]) -> tuple[BaseModel, CheckResult | None]:
        """Check a delivered result: schema and shape, the signed receipt, the workload's own check.

        Raises:
            VerificationFailedError: Saying which check failed and how.
        """
        job_id = str(data.get("id"))
        provider = None if data.get("provider") is None else str(data["provider"])
        result = data.get("result")
        if not isinstance(result, Mapping):
            raise VerificationFailedError(job_id, "schema", "the job succeeded without a result", provider)
        inp = spec.parsed_input()
        try:
            output = parse_output(spec.workload, result)
            check_output(spec.workload, inp, output)
        except WorkloadSpecError as err:
            raise VerificationFailedError(job_id, "schema", str(err), provider) from err
        if not self.verify:
            return output, None
        self._check_receipt(job_id, spec.workload, provider, output, data.get("receipt"))
        elements = _elements(spec)
        try:
            if elements <= _INLINE_VERIFY_ELEMENTS:
                check = verify_output(spec.workload, inp, output, rounds=self.verify_rounds)
            else:
                check = await asyncio.to_thread(
                    verify_output, spec.workload, inp, output, rounds=self.verify_rounds
                )
        except VerificationError as err:
            raise VerificationFailedError(job_id, "check", str(err), provider) from err
        if check is not None and not check.passed:
            log.warning(
                "result failed verification",
                extra={
                    "job_id": job_id,
                    "provider": provider,
                    "method": check.method,
                    "detail": check.detail,
                },
            )
            raise VerificationFailedError(job_id, check.method, check.detail, provider)
        return output, check

    def _check_receipt(
        self, job_id: str, workload: str, provider: str | None, output: BaseModel, receipt: Any
    ) -> None:
        """The receipt names the provider, is signed by it, and its result hash is the output's."""

        def fail(detail: str) -> VerificationFailedError:
            return VerificationFailedError(job_id, "receipt", detail, provider)

        if not isinstance(receipt, Mapping) or provider is None:
            raise fail("the result has no signed receipt")
        message, signature, domain = receipt.get("message"), receipt.get("signature"), receipt.get("domain")
        if (
            not isinstance(message, Mapping)
            or not isinstance(signature, str)
            or not isinstance(domain, Mapping)
        ):
            raise fail("the receipt lacks its message, signature or domain")
        expected = self._transport.receipt_domain
        if expected is not None and dict(domain) != dict(expected):
            raise fail(
                f"the receipt is signed in domain {dict(domain)}, not this deployment's {dict(expected)}"
            )
        try:
            signed = JobResult.model_validate(
                {
                    "job_id": message.get("jobId"),
                    "workload": workload,
                    "output": {},
                    "receipt": dict(message),
                    "signature": signature,
                },
                strict=False,
            )
            eip712_domain = Domain(
                name=str(domain["name"]),
                version=str(domain["version"]),
                chain_id=int(domain["chainId"]),
                verifying_contract=str(domain["verifyingContract"]),  # type: ignore[arg-type]
            )
        except (ValueError, KeyError, TypeError) as err:
            raise fail(f"the receipt cannot be read ({err})") from err
        if signed.receipt.provider != provider:
            raise fail(f"the receipt names provider {signed.receipt.provider}, not {provider}")
        try:
            valid = verify_receipt(signed, eip712_domain, signed.receipt.provider)
        except SignatureError:
            valid = False
        if not valid:
            raise fail(f"the receipt is not signed by {provider}")
        if result_hash(workload, output) != signed.receipt.result_hash:
            raise fail("the receipt's result hash is not the hash of the result")

    # --- plumbing ---

    def _check_open(self) -> None:
        if self._closed:
            raise ClientClosedError()

    async def _call(self, awaitable: Awaitable[_T]) -> _T:
        self._check_open()
        return await awaitable


def _elements(spec: JobSpec) -> int:
    inp = spec.input
    if spec.workload == "matmul":
        m, n = inp.get("m"), inp.get("n")
        if isinstance(m, int) and isinstance(n, int):
            return m * n
        return _INLINE_VERIFY_ELEMENTS + 1  # explicit tensors: do not guess
    return 0


def _int_or_none(value: Any) -> int | None:
    if value is None:
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


class _Progress:
    """A rich progress bar on stderr (a no-op when disabled)."""

    def __init__(self, total: int, *, enabled: bool) -> None:
        self.total = total
        self.ok = 0
        self.failed = 0
        self._bar: Any = None
        self._task: Any = None
        if enabled:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self._bar = Progress(
                TextColumn("[bold]proxima jobs"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("[green]{task.fields[ok]} ok[/] [red]{task.fields[failed]} failed[/]"),
                TimeElapsedColumn(),
                console=Console(stderr=True),
            )
            self._task = self._bar.add_task("jobs", total=total, ok=0, failed=0)

    def __enter__(self) -> _Progress:
        if self._bar is not None:
            self._bar.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.stop()

    def advance(self, ok: bool) -> None:
        if ok:
            self.ok += 1
        else:
            self.failed += 1
        if self._bar is not None:
            self._bar.update(self._task, advance=1, ok=self.ok, failed=self.failed)


# --- the synchronous face -----------------------------------------------------------------------------------


class _LoopThread:
    """A private asyncio event loop in a daemon thread; runs coroutines for the synchronous face."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._main, name="proxima-client-loop", daemon=True)
        self._thread.start()

    def _main(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def run(self, coro: Coroutine[Any, Any, _T]) -> _T:
        if threading.current_thread() is self._thread:
            coro.close()
            raise ClientError("a synchronous Client cannot be used from its own event loop; use AsyncClient")
        future = asyncio.run_coroutine_threadsafe(coro, self.loop)
        try:
            return future.result()
        except BaseException:
            future.cancel()
            raise

    def close(self) -> None:
        if self.loop.is_closed():
            return
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        if not self._thread.is_alive():
            self.loop.close()


class Job:
    """A submitted job (synchronous face of :class:`AsyncJob`)."""

    def __init__(self, inner: AsyncJob, runner: _LoopThread) -> None:
        self._inner = inner
        self._runner = runner

    def __repr__(self) -> str:
        return f"Job({self.id}, {self.state})"

    @property
    def id(self) -> str:
        """The job id."""
        return self._inner.id

    @property
    def spec(self) -> JobSpec:
        """What was submitted."""
        return self._inner.spec

    @property
    def data(self) -> Mapping[str, Any]:
        """The job's JSON as last read."""
        return self._inner.data

    @property
    def state(self) -> str:
        """Status as last read."""
        return self._inner.state

    @property
    def done(self) -> bool:
        """Whether the job is final (as last read)."""
        return self._inner.done

    @property
    def placement(self) -> Placement | None:
        """Where it runs (or ran) and why."""
        return self._inner.placement

    @property
    def timing(self) -> Timing:
        """Time per phase, milliseconds."""
        return self._inner.timing

    @property
    def receipt(self) -> Mapping[str, Any] | None:
        """The provider's signed receipt."""
        return self._inner.receipt

    @property
    def provider(self) -> str | None:
        """The provider that delivered the result."""
        return self._inner.provider

    @property
    def price_wei(self) -> int | None:
        """The agreed price."""
        return self._inner.price_wei

    @property
    def charged_wei(self) -> int | None:
        """What the job cost."""
        return self._inner.charged_wei

    @property
    def cached(self) -> bool:
        """Whether the market answered from its result cache."""
        return self._inner.cached

    @property
    def verification(self) -> CheckResult | None:
        """This client's own check of the result."""
        return self._inner.verification

    @property
    def market_verification(self) -> Mapping[str, Any] | None:
        """The market's own check of the result, when it reports one."""
        return self._inner.market_verification

    def status(self) -> str:
        """The job's status now (read from the market)."""
        return self._runner.run(self._inner.status())

    def refresh(self) -> Mapping[str, Any]:
        """Read the job again."""
        return self._runner.run(self._inner.refresh())

    def wait(self, timeout: float | None = None) -> Mapping[str, Any]:
        """Wait until final or ``timeout``; the job's JSON."""
        return self._runner.run(self._inner.wait(timeout))

    def result(self, timeout: float | None = None) -> BaseModel:
        """The verified output; see :meth:`AsyncJob.result` (same errors)."""
        return self._runner.run(self._inner.result(timeout))

    def cancel(self) -> bool:
        """Cancel the job; whether it was cancelled now."""
        return self._runner.run(self._inner.cancel())


class Client:
    """The synchronous client: :class:`AsyncClient`'s API with blocking methods (one implementation, run on
    a private event loop thread). Open one with :meth:`connect` or :meth:`embedded`; close it with
    :meth:`close` or a ``with`` block."""

    def __init__(self, inner: AsyncClient, runner: _LoopThread, *, owns_runner: bool = True) -> None:
        self._inner = inner
        self._runner = runner
        self._owns_runner = owns_runner

    def __repr__(self) -> str:
        return f"Client({self._inner._transport!r})"

    def session(self, **options: Any) -> Client:
        """A new session over the same market connection; see :meth:`AsyncClient.session`."""
        return Client(self._inner.session(**options), self._runner, owns_runner=False)

    @classmethod
    def _open(cls, opener: Callable[[], Coroutine[Any, Any, AsyncClient]]) -> Client:
        runner = _LoopThread()
        try:
            inner = runner.run(opener())
        except BaseException:
            runner.close()
            raise
        return cls(inner, runner)

    @classmethod
    def connect(
        cls,
        gateway_url: str,
        *,
        api_key: str | None = None,
        signer: LocalAccount | None = None,
        timeout: float = 30.0,
        **options: Any,
    ) -> Client:
        """A client of a gateway; see :meth:`AsyncClient.connect`."""
        return cls._open(
            lambda: AsyncClient.connect(
                gateway_url, api_key=api_key, signer=signer, timeout=timeout, **options
            )
        )

    @classmethod
    def embedded(cls, settings: EmbeddedSettings | Mapping[str, Any] | str | Path, **options: Any) -> Client:
        """A client running the market in this process; see :meth:`AsyncClient.embedded`."""
        return cls._open(lambda: AsyncClient.embedded(settings, **options))

    def close(self) -> None:
        """Close the client (and, embedded, stop the market's services)."""
        with contextlib.suppress(RuntimeError):
            self._runner.run(self._inner.aclose())
        if self._owns_runner:
            self._runner.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def mode(self) -> str:
        """``"gateway"`` or ``"embedded"``."""
        return self._inner.mode

    @property
    def budget(self) -> SessionBudget:
        """The session budget: limit, reserved, spent."""
        return self._inner.budget

    def submit(self, spec: JobSpecInput) -> Job:
        """Send a job; see :meth:`AsyncClient.submit`."""
        return Job(self._runner.run(self._inner.submit(spec)), self._runner)

    def job(self, job_id: str, spec: JobSpecInput) -> Job:
        """A handle on an earlier job; see :meth:`AsyncClient.job`."""
        return Job(self._runner.run(self._inner.job(job_id, spec)), self._runner)

    def run(self, spec: JobSpecInput, *, timeout: float | None = None) -> BaseModel:
        """Submit a job and return its verified output."""
        return self._runner.run(self._inner.run(spec, timeout=timeout))

    def map(
        self,
        specs: Iterable[JobSpecInput],
        *,
        progress: bool = True,
        concurrency: int = 32,
        timeout: float | None = None,
        raise_errors: bool = False,
    ) -> list[JobOutcome]:
        """Run many jobs; see :meth:`AsyncClient.map`."""
        return self._runner.run(
            self._inner.map(
                specs, progress=progress, concurrency=concurrency, timeout=timeout, raise_errors=raise_errors
            )
        )

    def offers(self, workload: str | None = None, *, fresh: bool = False) -> list[OfferInfo]:
        """Live offers; see :meth:`AsyncClient.offers`."""
        return self._runner.run(self._inner.offers(workload, fresh=fresh))

    def wait_ready(
        self,
        min_offers: int = 1,
        *,
        workload: str | None = None,
        measured: bool = False,
        timeout: float = 30.0,
    ) -> list[OfferInfo]:
        """Wait for the market; see :meth:`AsyncClient.wait_ready`."""
        return self._runner.run(
            self._inner.wait_ready(min_offers, workload=workload, measured=measured, timeout=timeout)
        )

    def estimate(self, spec: JobSpecInput) -> Estimate:
        """What a job may cost; see :meth:`AsyncClient.estimate`."""
        return self._runner.run(self._inner.estimate(spec))

    def account(self) -> AccountInfo:
        """The account at the market; see :meth:`AsyncClient.account`."""
        return self._runner.run(self._inner.account())

    def deposit(self) -> DepositInfo | None:
        """The voucher deposit (embedded mode)."""
        return self._runner.run(self._inner.deposit())

    def fund(self, amount_wei: int) -> DepositInfo:
        """Deposit into ``PaymentVouchers``; see :meth:`AsyncClient.fund`."""
        return self._runner.run(self._inner.fund(amount_wei))
