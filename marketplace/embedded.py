"""Embedded mode of the client: the gateway's own services in the client's process, without HTTP.

``proxima.sdk.AsyncClient.embedded(settings)`` loads this module on demand (the SDK does not import the
marketplace package) and talks to an :class:`EmbeddedMarket` exactly as it talks to a gateway: in the
gateway's JSON (``JobPublic``, ``OfferPublic``, ``AccountPublic``), with the same errors.

An :class:`EmbeddedMarket` is :class:`~proxima.marketplace.gateway.services.GatewayServices` built from
:class:`EmbeddedSettings` (the gateway's settings) and running in this process: its own libp2p host following
the offer topic and pinging providers, the chain state, the same :class:`MatchingEngine`, the dispatcher with
its failover and verification, and the payer, which here is **the client's own account** (a keystore, or a
public development account on a development chain): it signs vouchers against the client's
``PaymentVouchers`` deposit (:meth:`EmbeddedMarket.fund`) or opens an escrow per job. Jobs are accepted by the
gateway's own :func:`~proxima.marketplace.gateway.routes.jobs.accept_job` (validate, price, reserve, store)
and shown by :func:`~proxima.marketplace.gateway.routes.jobs.job_public`, so the same inputs give the same
jobs, the same prices and the same placements as at a gateway watching the same market.

State lives in ``data_dir`` (``jobs.sqlite``, ``accounts.sqlite``): jobs still running when the client closes
are resumed by the next embedded client on the same folder.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from eth_utils.address import to_checksum_address
from pydantic import ValidationError
from pydantic_settings import SettingsConfigDict

from proxima.marketplace.errors import MarketError
from proxima.marketplace.gateway.accounts import BudgetExceededError as AccountBudgetExceededError
from proxima.marketplace.gateway.events import TERMINAL_STATUSES, job_log_context
from proxima.marketplace.gateway.jobstore import JobStoreError
from proxima.marketplace.gateway.payer import Payer
from proxima.marketplace.gateway.routes.jobs import accept_job, job_public
from proxima.marketplace.gateway.schemas import ApiError, JobCreate, offer_public
from proxima.marketplace.gateway.services import GatewayServices
from proxima.marketplace.gateway.settings import GatewaySettings, WeiAmount
from proxima.marketplace.settings_files import load_settings_file
from proxima.sdk._client_errors import error_from_api
from proxima.sdk.chain import ChainError
from proxima.sdk.client import (
    BudgetExceededError,
    ClientError,
    DepositInfo,
    GatewayError,
    InvalidSpecError,
    JobNotFoundError,
)
from proxima.sdk.jobs import Domains
from proxima.sdk.types import Address
from proxima.sdk.units import UINT256_MAX
from proxima.sdk.workloads import WorkloadSpecError

__all__ = [
    "ENV_PREFIX",
    "EmbeddedMarket",
    "EmbeddedSettings",
    "EmbeddedStartError",
    "load_embedded_settings",
]

log = logging.getLogger(__name__)

ENV_PREFIX = "PROXIMA_CLIENT_"
"""Prefix of the environment variables that set embedded settings (``PROXIMA_CLIENT_P2P__BOOTSTRAP=...``)."""

_FOREVER_S = 365 * 86_400.0
_PATH_FIELDS = (("data_dir",), ("chain", "deployment"), ("payer", "keystore"))


class EmbeddedStartError(ClientError, MarketError):
    """The embedded market could not start (settings, payer key, chain, deployment, stores, network).

    Args:
        problem: What went wrong (the cause is chained).
    """

    def __init__(self, problem: str) -> None:
        super().__init__(f"embedded market cannot start: {problem}")


class EmbeddedSettings(GatewaySettings):
    """The gateway's settings (:class:`~proxima.marketplace.gateway.settings.GatewaySettings`), for a client
    that runs the market itself.

    ``payer`` is the client's own paying account. The differences from a gateway's defaults: ``data_dir`` is
    ``~/.proxima/client``, and ``deposit_headroom_wei`` is 0 (the client funds its deposit itself, with
    ``fund()`` or the client's automatic top-up, instead of the duty loop). ``host``, ``port`` and
    ``rate_limit`` are not used. Environment variables carry the prefix ``PROXIMA_CLIENT_``.
    """

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
        extra="forbid",
        frozen=True,
        allow_inf_nan=False,
        validate_default=True,
    )

    data_dir: Path = Path("~/.proxima/client")
    deposit_headroom_wei: WeiAmount = 0


def load_embedded_settings(config: Path | None = None, **overrides: Any) -> EmbeddedSettings:
    """Embedded settings from a TOML file (optional), the ``PROXIMA_CLIENT_*`` environment and ``overrides``.

    Relative paths in the file are relative to its folder; priority: overrides, environment, file, defaults.

    Raises:
        SettingsError: One line per problem, naming the field.
    """
    return load_settings_file(
        EmbeddedSettings,
        config,
        overrides,
        path_fields=_PATH_FIELDS,
        env_prefix=ENV_PREFIX,
        not_found="file not found",
    )


def _settings_of(
    settings: EmbeddedSettings | GatewaySettings | Mapping[str, Any] | str | Path,
) -> GatewaySettings:
    if isinstance(settings, GatewaySettings):
        return settings
    if isinstance(settings, str | Path):
        return load_embedded_settings(Path(settings))
    if isinstance(settings, Mapping):
        return load_embedded_settings(None, **dict(settings))
    raise EmbeddedStartError(
        f"settings must be EmbeddedSettings, a mapping or a TOML path, not {type(settings).__name__}"
    )


class EmbeddedMarket:
    """The gateway's services running in this process, answering the client in the gateway's JSON.

    Make one with :meth:`start`; :meth:`aclose` stops it. Every method runs on the event loop that started
    it (the services' dispatcher lives there).

    Args:
        services: Built and running services.
        stack: What stops them.
    """

    mode = "embedded"

    def __init__(self, services: GatewayServices, stack: contextlib.AsyncExitStack) -> None:
        self.services = services
        self._stack = stack
        payer: Payer = services.extra["payer"]
        self.payer = payer
        self.address: Address = payer.address
        self._domain = Domains.from_deployment(services.extra["deployment"]).faults_domain.as_dict()

    def __repr__(self) -> str:
        return f"EmbeddedMarket({self.address}, data_dir={str(self.services.settings.data_dir)!r})"

    @classmethod
    async def start(
        cls, settings: EmbeddedSettings | GatewaySettings | Mapping[str, Any] | str | Path
    ) -> EmbeddedMarket:
        """Build the services from the settings and start them (the network, the chain state refresher, the
        dispatcher, which resumes unfinished jobs of ``data_dir``).

        Args:
            settings: :class:`EmbeddedSettings`, a mapping of its fields, or a TOML file.

        Raises:
            EmbeddedStartError: If anything cannot be built or started (the cause chained).
        """
        try:
            resolved = _settings_of(settings)
            services = await asyncio.to_thread(GatewayServices.build, resolved)
        except (MarketError, ChainError, OSError) as err:
            raise EmbeddedStartError(str(err)) from err
        try:
            payer: Payer = services.extra["payer"]
            accounts = services.accounts
            # The market's own ledger does not limit this client (it is its own operator): its limits are the
            # client's session budget and its deposit.
            if accounts.get(payer.address) is None:
                accounts.add_client(payer.address, UINT256_MAX)
            else:
                accounts.set_budget(payer.address, UINT256_MAX)
        except BaseException as err:
            for close in reversed(services.closers):
                with contextlib.suppress(Exception):
                    close()
            if isinstance(err, MarketError):
                raise EmbeddedStartError(str(err)) from err
            raise
        stack = contextlib.AsyncExitStack()
        try:  # running() closes the files itself if a part fails to start
            await stack.enter_async_context(services.running())
        except (MarketError, ChainError, OSError) as err:
            raise EmbeddedStartError(str(err)) from err
        market = cls(services, stack)
        log.info("embedded market started", extra={"client": market.address})
        return market

    @property
    def receipt_domain(self) -> Mapping[str, Any]:
        """This deployment's ``FaultProofs`` domain: receipts must be signed in it."""
        return self._domain

    # --- jobs ---

    async def submit(self, body: Mapping[str, Any]) -> dict[str, Any]:
        """Accept a job exactly as ``POST /v1/jobs`` does (validate, price, reserve, store), then dispatch it.

        Raises:
            InvalidSpecError: Invalid body or input (422).
            BudgetExceededError: Over the market's budget (402).
            GatewayError: No provider (503), idempotency conflict (409), storage unavailable (503).
        """
        services = self.services
        try:
            create = JobCreate.model_validate(dict(body))
        except ValidationError as err:
            first = err.errors(include_url=False)[0]
            where = ".".join(str(p) for p in first["loc"]) or "body"
            raise InvalidSpecError(where, str(first["msg"]).removeprefix("Value error, ")) from err
        try:
            record, created = await asyncio.to_thread(
                accept_job,
                create,
                self.address,
                store=services.store,
                accounts=services.accounts,
                market=services.market,
                metrics=services.metrics,
            )
        except ApiError as err:
            raise error_from_api(err.status, err.code, err.message, err.param) from err
        except AccountBudgetExceededError as err:
            raise BudgetExceededError("gateway", err.needed_wei, err.available_wei, str(err)) from err
        except WorkloadSpecError as err:
            raise InvalidSpecError("input", str(err)) from err
        except JobStoreError as err:
            raise GatewayError(503, "storage_unavailable", str(err)) from err
        if created:
            with job_log_context(record.id):
                services.dispatcher.submit(record.id)
                services.metrics.job_submitted(record.workload)
                log.info("job accepted", extra={"client": self.address, "workload": record.workload})
        return job_public(record).model_dump(mode="json")

    def _own(self, job_id: str) -> Any:
        record = self.services.store.get(job_id)
        if record is None or record.client != self.address:
            raise JobNotFoundError(404, "not_found", f"no job {job_id} for {self.address}", "job_id")
        return record

    async def job(self, job_id: str) -> dict[str, Any]:
        """The job as ``GET /v1/jobs/{id}`` shows it.

        Raises:
            JobNotFoundError: No such job of this client.
        """
        return job_public(self._own(job_id)).model_dump(mode="json")

    async def wait(self, job_id: str, timeout: float | None) -> dict[str, Any]:
        """The job once final, or as it is after ``timeout`` seconds (None: no limit)."""
        self._own(job_id)
        record = await self.services.dispatcher.wait(
            job_id, _FOREVER_S if timeout is None else max(timeout, 0.0)
        )
        return job_public(record).model_dump(mode="json")

    async def cancel(self, job_id: str) -> dict[str, Any] | None:
        """Cancel a job as ``DELETE /v1/jobs/{id}`` does; None if it had already finished."""
        record = self._own(job_id)
        if record.status in TERMINAL_STATUSES:
            return None
        with job_log_context(job_id):
            cancelled = self.services.dispatcher.cancel(job_id)
            log.info("job cancel requested", extra={"cancelled": cancelled})
        record = self._own(job_id)
        if not cancelled and record.status.value != "cancelled":
            return None
        return job_public(record).model_dump(mode="json")

    # --- market ---

    async def offers(self, workload: str | None = None) -> list[dict[str, Any]]:
        """Live offers (serving ``workload``), by provider address, as ``GET /v1/offers`` shows them."""
        selected = []
        for signed in sorted(self.services.market.offers(), key=lambda s: s.offer.provider):
            if workload is not None and not any(w.name == workload for w in signed.offer.workloads):
                continue
            selected.append(offer_public(signed).model_dump(mode="json"))
        return selected

    async def measured_rtt_ms(self, provider: str) -> float | None:
        """This host's measured round trip to a provider, milliseconds."""
        rtt = self.services.market.measured_rtt(to_checksum_address(provider))
        return None if rtt is None else rtt * 1000.0

    # --- money ---

    async def account(self) -> dict[str, Any]:
        """Budget, spent, reserved and available in the market's ledger (``GET /v1/account``)."""
        account = self.services.accounts.get(self.address)
        if account is None:
            raise JobNotFoundError(404, "not_found", f"no client account {self.address}")
        return {
            "address": account.address,
            "budget_wei": str(account.budget_wei),
            "spent_wei": str(account.spent_wei),
            "reserved_wei": str(account.reserved_wei),
            "available_wei": str(account.available_wei),
            "api_keys": account.api_keys,
        }

    async def deposit(self) -> DepositInfo:
        """The client's ``PaymentVouchers`` deposit, what its unredeemed vouchers owe, and what is left.

        Raises:
            GatewayError: If the chain cannot be read.
        """

        def read() -> DepositInfo:
            balance = self.payer.deposit_available()
            owed = self.payer.outstanding()
            return DepositInfo(balance_wei=balance, owed_wei=owed, available_wei=balance - owed)

        try:
            return await asyncio.to_thread(read)
        except (ChainError, MarketError) as err:
            raise GatewayError(503, "chain_unavailable", f"cannot read the deposit: {err}") from err

    async def fund(self, amount_wei: int) -> DepositInfo:
        """Deposit ``amount_wei`` from the client's account into ``PaymentVouchers``.

        Raises:
            GatewayError: If the transaction fails (not enough ether, chain unreachable).
        """
        try:
            await asyncio.to_thread(self.payer.contracts.vouchers.deposit, self.payer.account, amount_wei)
        except (ChainError, MarketError) as err:
            raise GatewayError(0, "deposit_failed", f"cannot deposit {amount_wei} wei: {err}") from err
        log.info("voucher deposit funded", extra={"client": self.address, "amount_wei": amount_wei})
        return await self.deposit()

    async def aclose(self) -> None:
        """Stop the services (unfinished jobs stay stored for the next start) and close the files."""
        await self._stack.aclose()
