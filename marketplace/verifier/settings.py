"""The verifier's settings: one validated :class:`VerifierSettings` from a TOML file and PROXIMA_VERIFY_*.

Sources, highest priority first: keyword arguments (tests, command-line options), environment variables
(``PROXIMA_VERIFY_PORT=8090``, ``PROXIMA_VERIFY_DUTIES__INTERVAL_SECONDS=30``), the TOML file given to
:func:`load_settings` (``proxima-verify serve --config FILE``), the defaults. Unknown fields are errors; each
problem is reported as ``<dotted.field>: <what is wrong> (environment: VAR)`` in one :class:`SettingsError`.
Relative paths in the file are relative to its folder. No secret belongs in the file: the key lives in an
encrypted keystore whose passphrase is read from the variable ``key.passphrase_env`` names, and API keys are
listed by their SHA-256 only.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from proxima.marketplace.gateway.settings import ChainSettings, P2PSettings, Seconds, VerifierUrl
from proxima.marketplace.settings_files import (
    KeySection,
    SettingsError,
    file_values_source,
    load_settings_file,
)
from proxima.sdk.units import WeiAmount
from proxima.sdk.workloads import MATMUL_MAX_DIM

__all__ = [
    "ENV_PREFIX",
    "CanarySettings",
    "DutySettings",
    "KeySettings",
    "SettingsError",
    "VerifierSettings",
    "load_settings",
]

ENV_PREFIX = "PROXIMA_VERIFY_"
"""Prefix of the environment variables that set verifier settings."""

_SHA256 = re.compile(r"^[0-9a-f]{64}$")


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class KeySettings(KeySection):
    """The verifier's key: it signs verdicts and reports, commits canaries, pays challenge jobs.

    Exactly one of ``keystore`` (production) or ``dev_account_index`` (development chains, with
    ``dev_mode = true``: those keys are public).

    Attributes:
        keystore: An encrypted keystore (``proxima-verify init`` writes one).
        passphrase_env: The environment variable holding its passphrase.
        dev_account_index: Index into the public development accounts.
    """

    section: ClassVar[str] = "key"
    passphrase_env: str = "PROXIMA_VERIFY_PASSPHRASE"  # noqa: S105 - the variable's name, not a secret


class CanarySettings(_Section):
    """Canaries issued over HTTP (``POST /v1/canaries``): each costs a transaction and a product here.

    Attributes:
        max_flops: Largest canary (``2 m k n``) the verifier computes.
        max_per_minute: Canaries issued per minute at most (beyond: 429).
    """

    max_flops: int = Field(default=2 * 2048**3, ge=2, le=2 * MATMUL_MAX_DIM**3)
    max_per_minute: int = Field(default=120, ge=1, le=100_000)


class DutySettings(_Section):
    """The duty loop: challenge providers with its own canaries, report, prove faults.

    Attributes:
        enabled: Run the loop.
        interval_seconds: Time between rounds.
        m: Rows of the challenge matmul.
        k: Inner dimension.
        n: Columns.
        dtype: Element type.
        job_timeout_seconds: Longest wait for one provider's answer.
        max_price_wei: Largest price paid for one challenge job (providers asking more are skipped).
        deposit_headroom_wei: The voucher deposit is kept this much above what unredeemed vouchers owe
            (0: never deposit).
        report_batch: Reports submitted in one transaction at most.
        report_ttl_seconds: Validity of a signed report (its deadline).
        peers: Other verifiers (``proxima-verify`` base URLs) asked for verdicts when the quorum needs more
            than this verifier's signature.
        peer_timeout_seconds: Longest wait for one peer's verdict.
        max_challenges_per_round: Providers challenged in one round at most (rotating through the book).
    """

    enabled: bool = True
    interval_seconds: Seconds = 60.0
    m: int = Field(default=256, ge=1, le=MATMUL_MAX_DIM)
    k: int = Field(default=256, ge=1, le=MATMUL_MAX_DIM)
    n: int = Field(default=256, ge=1, le=MATMUL_MAX_DIM)
    dtype: Literal["float32", "float64"] = "float32"
    job_timeout_seconds: Seconds = 60.0
    max_price_wei: WeiAmount = 10**16
    deposit_headroom_wei: WeiAmount = 10**17
    report_batch: int = Field(default=32, ge=1, le=256)
    report_ttl_seconds: int = Field(default=3_600, ge=60, le=30 * 86_400)
    peers: list[VerifierUrl] = Field(default_factory=list, max_length=16)
    peer_timeout_seconds: Seconds = 30.0
    max_challenges_per_round: int = Field(default=16, ge=1, le=10_000)


class VerifierSettings(BaseSettings):
    """Everything the verifier needs besides its passphrase.

    Attributes:
        host: Interface the HTTP server binds.
        port: Its TCP port (0: any free one).
        data_dir: Folder of its SQLite file (``verifier.sqlite``).
        chain: Chain endpoint and deployment.
        key: The verifier's key.
        p2p: The libp2p host (challenges go to providers over it).
        api_key_sha256: SHA-256 (hex) of the API keys accepted as ``Authorization: Bearer`` on the POST
            routes; empty: no key needed (development).
        freivalds_rounds: Rounds of Freivalds' check when judging a matmul result.
        embed_recompute: Judge embed results by recomputing them (needs the ``[embed]`` extra).
        embed_atol: Largest absolute difference between recomputed and given embedding values.
        canaries: Limits on canaries issued over HTTP.
        duties: The duty loop.
        max_request_bytes: Largest request body (413 beyond).
        dev_mode: Development chains: allows ``key.dev_account_index``.
        log_level: Logging level.
        log_json: JSON log lines.
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
    port: int = Field(default=8090, ge=0, le=65_535)
    data_dir: Path = Path("~/.proxima/verifier")
    chain: ChainSettings = Field(default_factory=ChainSettings)
    key: KeySettings | None = None
    p2p: P2PSettings = Field(default_factory=P2PSettings)
    api_key_sha256: list[str] = Field(default_factory=list, max_length=64)
    freivalds_rounds: int = Field(default=32, ge=1, le=256)
    embed_recompute: bool = True
    embed_atol: float = Field(default=1e-3, gt=0, le=1.0)
    canaries: CanarySettings = Field(default_factory=CanarySettings)
    duties: DutySettings = Field(default_factory=DutySettings)
    max_request_bytes: int = Field(default=128 * 2**20, ge=1_024, le=2**31)
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

    @field_validator("data_dir")
    @classmethod
    def _expand(cls, value: Path) -> Path:
        return value.expanduser()

    @field_validator("api_key_sha256")
    @classmethod
    def _hashes(cls, value: list[str]) -> list[str]:
        for item in value:
            if not _SHA256.match(item):
                raise ValueError(
                    f"{item[:16]!r}... is not 64 lower-case hex digits (a SHA-256 of an API key)"
                )
        return value

    @model_validator(mode="after")
    def _dev_key_needs_dev_mode(self) -> VerifierSettings:
        if self.key is not None and self.key.dev_account_index is not None and not self.dev_mode:
            raise ValueError(
                "key.dev_account_index uses a public development key: set dev_mode = true (development "
                "chains only) or give key.keystore"
            )
        return self

    @property
    def db_path(self) -> Path:
        """The verifier's database: ``data_dir/verifier.sqlite``."""
        return self.data_dir / "verifier.sqlite"


_PATH_FIELDS = (("data_dir",), ("chain", "deployment"), ("key", "keystore"))


def load_settings(config: Path | None = None, **overrides: Any) -> VerifierSettings:
    """Build the settings from a TOML file (optional), the environment and ``overrides``.

    Raises:
        SettingsError: If the file is missing, unreadable or not TOML, or a value is invalid; one line per
            problem naming the field and the environment variable that sets it.
    """
    return load_settings_file(
        VerifierSettings, config, overrides, path_fields=_PATH_FIELDS, env_prefix=ENV_PREFIX
    )
