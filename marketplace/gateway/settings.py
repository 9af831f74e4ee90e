"""The gateway's settings: one validated :class:`GatewaySettings`, from a TOML file and ``PROXIMA_GATEWAY_*``.

Sources, highest priority first: keyword arguments (tests), environment variables, the TOML file given to
:func:`load_settings` (``proxima-gateway serve --config FILE``), the defaults. Environment variables carry the
prefix ``PROXIMA_GATEWAY_`` and use ``__`` between nested names: ``PROXIMA_GATEWAY_PORT=8080``,
``PROXIMA_GATEWAY_RATE_LIMIT__BURST=20``, ``PROXIMA_GATEWAY_P2P__BOOTSTRAP='["/ip4/.../p2p/16U..."]'``.

Every field is checked and unknown fields in the file are errors; a problem is reported as
``<dotted.field>: <what is wrong>`` (with the environment variable that sets it), in one
:class:`SettingsError`. Relative paths in the file are relative to the file's folder. Wei amounts are
integers or strings (``"100000000000000000"``, ``"0.1 ether"``, ``"20 gwei"``), since TOML integers stop at
2**63 - 1. No secret belongs in the file: the payer key lives in an encrypted keystore whose passphrase is
read from the environment variable named by ``payer.passphrase_env``.
"""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from proxima.marketplace import settings_files
from proxima.marketplace.matching.spec import MatchingConfig
from proxima.marketplace.settings_files import (
    KeySection,
    SettingsError,
    file_values_source,
    load_settings_file,
)
from proxima.sdk.chain.devnet import DEFAULT_DEPLOYMENT_PATH
from proxima.sdk.p2p import InvalidMultiaddrError, parse_bootstrap, parse_multiaddr
from proxima.sdk.units import WeiAmount, parse_wei

__all__ = [
    "ENV_PREFIX",
    "AuditSettings",
    "ChainSettings",
    "GatewaySettings",
    "P2PSettings",
    "PayerSettings",
    "RateLimitSettings",
    "SettingsError",
    "VerificationSettings",
    "WeiAmount",
    "describe_errors",
    "load_settings",
    "parse_wei",
]

ENV_PREFIX = "PROXIMA_GATEWAY_"
"""Prefix of the environment variables that set gateway settings."""

_LABEL = r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_HOSTNAME = re.compile(rf"^(?=.{{1,253}}$){_LABEL}(\.{_LABEL})*$")

Seconds = Annotated[float, Field(gt=0, le=86_400)]


def _listen_addr(text: str) -> str:
    try:
        addr = parse_multiaddr(text)
    except InvalidMultiaddrError as err:
        raise ValueError(str(err)) from err
    names = [p.name for p in addr.protocols()]
    if names not in (["ip4", "tcp"], ["ip6", "tcp"]):
        raise ValueError(f"{text!r}: listen addresses are /ip4/<ip>/tcp/<port> or /ip6/<ip>/tcp/<port>")
    return text


def _peer_addr(text: str) -> str:
    try:
        parse_bootstrap(text)
    except InvalidMultiaddrError as err:
        raise ValueError(str(err)) from err
    return text


ListenAddr = Annotated[str, AfterValidator(_listen_addr)]
PeerAddr = Annotated[str, AfterValidator(_peer_addr)]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class ChainSettings(_Section):
    """The chain the gateway pays on and reads provider records from.

    Attributes:
        url: JSON-RPC endpoint (``http`` or ``https``).
        deployment: The deployment file ``proxima-devnet`` (``sdk.deploy``) writes.
        request_timeout_seconds: Longest wait for one RPC answer.
    """

    url: str = "http://127.0.0.1:8545"
    deployment: Path = DEFAULT_DEPLOYMENT_PATH
    request_timeout_seconds: Seconds = 30.0

    @field_validator("url")
    @classmethod
    def _check_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"{value!r} is not an http:// or https:// URL with a host")
        try:
            parts.port  # noqa: B018 - raises ValueError for a bad port
        except ValueError as err:
            raise ValueError(f"{value!r} has an invalid port") from err
        return value


class PayerSettings(KeySection):
    """The gateway's paying account (it signs job requests and vouchers, and opens escrow jobs).

    Exactly one of ``keystore`` (production) or ``dev_account_index`` (development chains only, with
    ``dev_mode = true``: those keys are public) must be given.

    Attributes:
        keystore: An encrypted Ethereum keystore (``proxima-node init`` writes one; any V3 keystore works).
        passphrase_env: Name of the environment variable holding the keystore's passphrase.
        dev_account_index: Index into the public development accounts (anvil's and py-evm's funded ones).
    """

    section: ClassVar[str] = "payer"
    passphrase_env: str = "PROXIMA_GATEWAY_PASSPHRASE"  # noqa: S105 - the variable's name, not a secret


class P2PSettings(_Section):
    """The gateway's own libp2p host (it follows offers and dials providers).

    Attributes:
        listen: Multiaddrs to listen on.
        bootstrap: Peers to dial at start, each ending in ``/p2p/<peer id>``.
        ping_interval_seconds: How often offered providers are pinged to measure RTTs.
    """

    listen: list[ListenAddr] = Field(default_factory=lambda: ["/ip4/127.0.0.1/tcp/0"], min_length=1)
    bootstrap: list[PeerAddr] = Field(default_factory=list, max_length=64)
    ping_interval_seconds: Seconds = 10.0


class RateLimitSettings(_Section):
    """Requests each client may make: a token bucket refilled at ``requests_per_second`` up to ``burst``.

    Attributes:
        requests_per_second: Sustained rate per client.
        burst: Requests a client may make at once after being idle.
    """

    requests_per_second: float = Field(default=50.0, gt=0, le=1_000_000)
    burst: int = Field(default=100, ge=1, le=1_000_000)


def _verifier_url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{value!r} is not an http:// or https:// URL with a host")
    try:
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError as err:
        raise ValueError(f"{value!r} has an invalid port") from err
    if parts.query or parts.fragment:
        raise ValueError(f"{value!r}: a verifier's base URL has no query or fragment")
    return value.rstrip("/")


VerifierUrl = Annotated[str, AfterValidator(_verifier_url)]


class VerificationSettings(_Section):
    """How the gateway checks results before a job succeeds (docs/GATEWAY.md, "Verification").

    Attributes:
        freivalds_rounds: Rounds of Freivalds' check on every matmul result (false acceptance of a wrong
            product at most ``2**-rounds``).
        embed_redundancy: Distinct providers that run every embed job (a job's own ``redundancy`` wins
            when higher); their embeddings must agree. 1: no redundant runs.
        canary_rate: Share (0..1) of successful matmul jobs after which the same provider also gets a
            canary of the same shape (answer committed on chain beforehand by a verifier).
        verifier_urls: Base URLs of ``proxima-verify`` services: they sign the verdicts (a quorum of them)
            that put evidence against a wrong result on chain, and issue canaries.
        evidence: File evidence on chain against rejected results (off: results are still rejected and
            rerun, nobody is slashed).
        verifier_timeout_seconds: Longest wait for one verifier answer.
        embed_tolerance: Largest absolute difference between two providers' embedding values that still
            counts as agreement.
        quarantine_seconds: How long a provider whose result was rejected gets no new jobs from this
            gateway (0: none; its circuit breaker and reliability still count the failure).
    """

    freivalds_rounds: int = Field(default=16, ge=1, le=64)
    embed_redundancy: int = Field(default=1, ge=1, le=5)
    canary_rate: float = Field(default=0.0, ge=0.0, le=1.0)
    verifier_urls: list[VerifierUrl] = Field(default_factory=list, max_length=16)
    evidence: bool = True
    verifier_timeout_seconds: Seconds = 30.0
    embed_tolerance: float = Field(default=1e-3, gt=0, le=1.0)
    quarantine_seconds: float = Field(default=600.0, ge=0, le=86_400)

    @field_validator("verifier_urls")
    @classmethod
    def _distinct(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError("verifier_urls lists a URL twice")
        return value


class AuditSettings(_Section):
    """The auditor the gateway runs beside it (docs/AUDIT.md): an index of the contracts' events in
    ``data_dir/audit.sqlite``, the ``/v1/audit`` API and the web explorer at ``/explorer``.

    Attributes:
        enabled: Index the chain and serve the audit API and the explorer.
        follow_interval_seconds: How often the index follows the chain.
        confirmations: Blocks kept back from the chain's head before indexing (None: 0 on development
            chains, 12 elsewhere).
    """

    enabled: bool = True
    follow_interval_seconds: Seconds = 5.0
    confirmations: int | None = Field(default=None, ge=0, le=1_000)


class GatewaySettings(BaseSettings):
    """Everything the gateway needs besides the payer's passphrase.

    Attributes:
        host: Interface the HTTP server binds.
        port: Its TCP port (0: any free one).
        data_dir: Folder of the SQLite files (``accounts.sqlite``, ``jobs.sqlite``).
        chain: Chain endpoint and deployment.
        payer: The paying account; ``serve`` needs one (the client commands do not).
        p2p: The libp2p host.
        rate_limit: Per-client request rate.
        default_budget_wei: Budget of a client added without one (``proxima-gateway add-client``).
        max_attempts: Providers tried per job before it fails (the first one plus failovers).
        attempt_timeout_seconds: Longest one attempt may take before the job moves to a backup.
        job_timeout_seconds: Longest a whole job may take (all attempts) before it fails with ``deadline``.
        capacity_wait_seconds: How long a job whose qualifying providers are all busy waits for a free slot.
        max_concurrent_jobs: Jobs dispatched at once (more wait their turn, stored).
        deposit_headroom_wei: The payer keeps its PaymentVouchers deposit at least this much above what it
            owes through unredeemed vouchers (topped up at start and by the duty loop; 0: never deposits).
        duty_interval_seconds: How often the duty loop confirms and claims escrows and tops up the deposit.
        wait_timeout_seconds: Longest a synchronous endpoint (``/v1/embeddings``) waits for its job.
        chainstate_ttl_seconds: How long provider records read from the chain are reused.
        max_request_bytes: Largest request body accepted (413 beyond).
        matching: The matching engine's weights and shares.
        verification: Result checks, redundant embed runs, canaries, evidence on chain.
        audit: The auditor beside the gateway (event index, ``/v1/audit``, ``/explorer``).
        result_cache: Serve repeated deterministic jobs from the result cache (clients can opt out per job).
        dev_mode: Development chains: allows ``payer.dev_account_index``.
        log_level: Logging level.
        log_json: Log JSON lines instead of ``key=value``.
    """

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
        extra="forbid",
        frozen=True,
        allow_inf_nan=False,
        validate_default=True,
    )

    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65_535)
    data_dir: Path = Path("~/.proxima/gateway")
    chain: ChainSettings = Field(default_factory=ChainSettings)
    payer: PayerSettings | None = None
    p2p: P2PSettings = Field(default_factory=P2PSettings)
    rate_limit: RateLimitSettings = Field(default_factory=RateLimitSettings)
    default_budget_wei: WeiAmount = 10**17
    max_attempts: int = Field(default=3, ge=1, le=20)
    attempt_timeout_seconds: Seconds = 60.0
    job_timeout_seconds: Seconds = 600.0
    capacity_wait_seconds: float = Field(default=30.0, ge=0, le=3_600)
    max_concurrent_jobs: int = Field(default=256, ge=1, le=100_000)
    deposit_headroom_wei: WeiAmount = 5 * 10**17
    duty_interval_seconds: Seconds = 10.0
    wait_timeout_seconds: Seconds = 120.0
    chainstate_ttl_seconds: Seconds = 30.0
    max_request_bytes: int = Field(default=64 * 2**20, ge=1_024, le=2**31)
    matching: MatchingConfig = Field(default_factory=MatchingConfig)
    verification: VerificationSettings = Field(default_factory=VerificationSettings)
    audit: AuditSettings = Field(default_factory=AuditSettings)
    result_cache: bool = True
    dev_mode: bool = False
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_json: bool = False

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Keyword arguments, then the environment, then the file :func:`load_settings` read."""
        return (init_settings, env_settings, file_values_source(settings_cls))

    @field_validator("host")
    @classmethod
    def _check_host(cls, value: str) -> str:
        try:
            ipaddress.ip_address(value)
        except ValueError:
            if not _HOSTNAME.match(value):
                raise ValueError(f"{value!r} is not an IP address or host name") from None
        return value

    @field_validator("data_dir")
    @classmethod
    def _expand(cls, value: Path) -> Path:
        return value.expanduser()

    @model_validator(mode="after")
    def _dev_key_needs_dev_mode(self) -> GatewaySettings:
        if self.payer is not None and self.payer.dev_account_index is not None and not self.dev_mode:
            raise ValueError(
                "payer.dev_account_index uses a public development key: set dev_mode = true (development "
                "chains only) or give payer.keystore"
            )
        return self

    @model_validator(mode="after")
    def _attempt_fits_job(self) -> GatewaySettings:
        if self.attempt_timeout_seconds > self.job_timeout_seconds:
            raise ValueError(
                f"attempt_timeout_seconds ({self.attempt_timeout_seconds}) must not exceed "
                f"job_timeout_seconds ({self.job_timeout_seconds})"
            )
        return self

    @property
    def accounts_path(self) -> Path:
        """The clients, API keys and budgets: ``data_dir/accounts.sqlite``."""
        return self.data_dir / "accounts.sqlite"

    @property
    def jobs_path(self) -> Path:
        """The job store: ``data_dir/jobs.sqlite``."""
        return self.data_dir / "jobs.sqlite"

    @property
    def audit_path(self) -> Path:
        """The auditor's event index: ``data_dir/audit.sqlite``."""
        return self.data_dir / "audit.sqlite"


_PATH_FIELDS = (("data_dir",), ("chain", "deployment"), ("payer", "keystore"))


def load_settings(config: Path | None = None, **overrides: Any) -> GatewaySettings:
    """Build the settings from a TOML file (optional), the environment and ``overrides``.

    Args:
        config: A TOML file; relative paths inside it are relative to its folder.
        overrides: Field values that win over everything else (tests, command-line options).

    Returns:
        The validated settings.

    Raises:
        SettingsError: If the file is missing, unreadable or not TOML, or a value is invalid; one line per
            problem naming the field and the environment variable that sets it.
    """
    return load_settings_file(
        GatewaySettings, config, overrides, path_fields=_PATH_FIELDS, env_prefix=ENV_PREFIX
    )


def describe_errors(err: ValidationError) -> list[str]:
    """One readable line per validation error: ``dotted.field: problem (env VAR)``."""
    return settings_files.describe_errors(err, ENV_PREFIX)
