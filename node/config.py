"""The node's configuration file (TOML): one validated :class:`NodeConfig`.

A provider edits ``node.toml`` (written by ``proxima-node init`` from :func:`default_config`); the node reads
it with :func:`load_config`. Every field is checked, unknown fields are errors (a typo never silently falls
back to a default), and each problem is reported as ``<file>: <dotted.field>: <what is wrong>``.

Relative paths in the file (``data_dir``, ``keystore``, ``chain.deployment``) are relative to the folder
of the file, so a node folder can be moved as a whole. Wei amounts may be written as integers or, because
TOML integers stop at 2**63 - 1 (~9.2 ETH), as strings: ``"12000000000000000000"``, ``"1.5 ether"``,
``"20 gwei"``. No secrets belong in this file: the key lives in the keystore.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import re
import tomllib
import types
import typing
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

import tomli_w
from multiaddr import Multiaddr
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from proxima.node.errors import ConfigError
from proxima.sdk.chain.devnet import DEFAULT_DEPLOYMENT_PATH
from proxima.sdk.units import WeiAmount

__all__ = [
    "CONFIG_FILE_NAME",
    "DEFAULT_PRICES",
    "CapacityConfig",
    "ChainConfig",
    "ConfigFileError",
    "DeviceSetting",
    "FaultsConfig",
    "LimitsConfig",
    "Location",
    "MetricsConfig",
    "NodeConfig",
    "P2PConfig",
    "SettlementConfig",
    "default_config",
    "load_config",
    "save_config",
]

log = logging.getLogger(__name__)

CONFIG_FILE_NAME = "node.toml"
"""Name of the configuration file inside a node folder."""

DeviceSetting = Literal["auto", "cpu", "cuda"]
"""Where workloads run: ``auto`` picks CUDA when a GPU and a CUDA build of torch are present."""

DEFAULT_PRICES: dict[str, int] = {
    "matmul": 10**12,  # wei per GFLOP (1,000 gwei)
    "embed": 10**12,  # wei per 1,000 characters
}
"""Development unit prices in wei per billing unit of each workload."""

_TOML_INT_MAX = 2**63 - 1
_REGION = re.compile(r"^[a-z0-9]+(-[a-z0-9]+)*$")
_WORKLOAD = re.compile(r"^[a-z][a-z0-9_-]*$")
_LABEL = r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_HOSTNAME = re.compile(rf"^(?=.{{1,253}}$){_LABEL}(\.{_LABEL})*$")
# ISO 3166-1 alpha-2: the 249 officially assigned codes.
_COUNTRIES = frozenset(
    re.findall(
        r"[A-Z]{2}",
        "AD AE AF AG AI AL AM AO AQ AR AS AT AU AW AX AZ BA BB BD BE BF BG BH BI BJ BL BM BN BO BQ BR BS "
        "BT BV BW BY BZ CA CC CD CF CG CH CI CK CL CM CN CO CR CU CV CW CX CY CZ DE DJ DK DM DO DZ EC EE "
        "EG EH ER ES ET FI FJ FK FM FO FR GA GB GD GE GF GG GH GI GL GM GN GP GQ GR GS GT GU GW GY HK HM "
        "HN HR HT HU ID IE IL IM IN IO IQ IR IS IT JE JM JO JP KE KG KH KI KM KN KP KR KW KY KZ LA LB LC "
        "LI LK LR LS LT LU LV LY MA MC MD ME MF MG MH MK ML MM MN MO MP MQ MR MS MT MU MV MW MX MY MZ NA "
        "NC NE NF NG NI NL NO NP NR NU NZ OM PA PE PF PG PH PK PL PM PN PR PS PT PW PY QA RE RO RS RU RW "
        "SA SB SC SD SE SG SH SI SJ SK SL SM SN SO SR SS ST SV SX SY SZ TC TD TF TG TH TJ TK TL TM TN TO "
        "TR TT TV TW TZ UA UG UM US UY UZ VA VC VE VG VI VN VU WF WS YE YT ZA ZM ZW ",
    )
)


class ConfigFileError(ConfigError):
    """A configuration file is missing, is not TOML, or has invalid fields.

    Args:
        path: The file.
        problems: One line per problem, each naming the dotted field (``prices.matmul: ...``).
    """

    def __init__(self, path: Path, problems: list[str]) -> None:
        self.path = path
        self.problems = problems
        super().__init__("\n".join(f"{path}: {problem}" for problem in problems))


Wei = WeiAmount
"""An amount in wei (0 .. 2**256 - 1)."""

Seconds = Annotated[float, Field(gt=0, le=365 * 86_400)]


def _resolve(value: Path, info: ValidationInfo) -> Path:
    """Make a relative path absolute against ``context["base_dir"]`` (the config file's folder), if given."""
    base = (info.context or {}).get("base_dir")
    value = value.expanduser()
    if base is not None and not value.is_absolute():
        return Path(base) / value
    return value


class _Section(BaseModel):
    # strict: a string is not a number and a number is not a bool; floats exclude nan and inf.
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)


def _listen_addr(text: str) -> str:
    if "p2p" in _protocols(_multiaddr(text)):
        raise ValueError(f"{text!r}: a listen address must not contain /p2p/")
    return text


def _peer_addr(text: str) -> str:
    if "p2p" not in _protocols(_multiaddr(text)):
        raise ValueError(f"{text!r} must end in /p2p/<peer id> of the peer to dial")
    return text


ListenAddr = Annotated[str, AfterValidator(_listen_addr)]
"""A multiaddr to listen on, without ``/p2p/``."""

PeerAddr = Annotated[str, AfterValidator(_peer_addr)]
"""A multiaddr of a peer, with its ``/p2p/<peer id>``."""


class Location(_Section):
    """Where the machine is (WGS 84 degrees), for clients that place jobs by distance."""

    lat: float = Field(ge=-90, le=90)
    lon: float = Field(ge=-180, le=180)


class P2PConfig(_Section):
    """libp2p networking.

    Attributes:
        listen: Multiaddrs to listen on (``/ip4/0.0.0.0/tcp/4001`` to accept peers from anywhere).
        bootstrap: Peers to dial at start; each must end in ``/p2p/<peer id>``.
        announce: Addresses to advertise in offers instead of the listen addresses (a public address behind
            NAT, or a proxy in front of the node); empty: the listen addresses.
        heartbeat_seconds: How often the node republishes its offer.
        offer_ttl_seconds: How long an offer stays valid; more than a heartbeat, at most 300 s.
    """

    listen: list[ListenAddr] = Field(default_factory=lambda: ["/ip4/127.0.0.1/tcp/0"], min_length=1)
    bootstrap: list[PeerAddr] = Field(default_factory=list)
    announce: list[ListenAddr] = Field(default_factory=list, max_length=8)
    heartbeat_seconds: Seconds = 10.0
    offer_ttl_seconds: float = Field(default=60.0, gt=0, le=300)

    @model_validator(mode="after")
    def _check_ttl(self) -> P2PConfig:
        if self.offer_ttl_seconds <= self.heartbeat_seconds:
            raise ValueError(
                f"offer_ttl_seconds ({self.offer_ttl_seconds}) must be longer than heartbeat_seconds "
                f"({self.heartbeat_seconds}), or offers expire between heartbeats"
            )
        return self


class ChainConfig(_Section):
    """The chain the node stakes and settles on.

    Attributes:
        url: JSON-RPC endpoint (``http``, ``https``, ``ws`` or ``wss``).
        deployment: The deployment file (``proxima-devnet`` writes ``.devnet/deployment.json``).
        stake_wei: Stake to hold in the registry (topped up at start if lower).
        confirmations: Blocks to wait after a transaction's block (0: the receipt is enough).
    """

    url: str = "http://127.0.0.1:8545"
    deployment: Annotated[Path, Field(strict=False)] = DEFAULT_DEPLOYMENT_PATH
    stake_wei: Wei = 10**18
    confirmations: int = Field(default=0, ge=0, le=1_000)

    @field_validator("url")
    @classmethod
    def _check_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https", "ws", "wss") or not parts.hostname:
            raise ValueError(f"{value!r} is not an http(s):// or ws(s):// URL with a host")
        try:
            parts.port  # noqa: B018 - raises ValueError for a bad port
        except ValueError as err:
            raise ValueError(f"{value!r} has an invalid port") from err
        return value

    @field_validator("deployment")
    @classmethod
    def _resolve_deployment(cls, value: Path, info: ValidationInfo) -> Path:
        return _resolve(value, info)


class CapacityConfig(_Section):
    """How much work the node takes at once.

    Attributes:
        max_concurrency: Jobs computed at the same time.
        max_queue: Jobs waiting beyond those; more are refused as busy.
    """

    max_concurrency: int = Field(default=2, ge=1, le=1_024)
    max_queue: int = Field(default=16, ge=0, le=100_000)


class LimitsConfig(_Section):
    """Bounds on a single request.

    Attributes:
        max_request_bytes: Largest request frame accepted.
        max_matmul_dim: Largest matrix dimension served (the protocol allows up to 4096).
        job_timeout_seconds: A job still computing after this long fails.
    """

    max_request_bytes: int = Field(default=16 * 2**20, ge=1_024, le=2**31)
    max_matmul_dim: int = Field(default=4_096, ge=1, le=4_096)
    job_timeout_seconds: Seconds = 120.0


class SettlementConfig(_Section):
    """When the node settles what it earned.

    Attributes:
        voucher_redeem_threshold_wei: Redeem a client's vouchers once this much is unredeemed.
        voucher_redeem_interval_seconds: ... or at least this often.
        max_unredeemed_per_client_wei: Refuse voucher-paid jobs from a client owing more than this.
        commit_margin_seconds: Commit escrow results at least this long before their deadline.
    """

    voucher_redeem_threshold_wei: Wei = 10**16
    voucher_redeem_interval_seconds: Seconds = 3_600.0
    max_unredeemed_per_client_wei: Wei = 10**17
    commit_margin_seconds: float = Field(default=60.0, ge=0, le=86_400)


class MetricsConfig(_Section):
    """The Prometheus ``/metrics`` endpoint.

    Attributes:
        enabled: Serve it at all.
        host: Interface to bind (``127.0.0.1`` keeps it local; ``0.0.0.0`` exposes it).
        port: TCP port; 0 picks a free one (the node logs which).
    """

    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = Field(default=0, ge=0, le=65_535)

    @field_validator("host")
    @classmethod
    def _check_host(cls, value: str) -> str:
        try:
            ipaddress.ip_address(value)
        except ValueError:
            if not _HOSTNAME.match(value):
                raise ValueError(f"{value!r} is not an IP address or host name") from None
        return value


class FaultsConfig(_Section):
    """Fault injection, for demos and tests only: a node that cheats on purpose (``proxima.node.faults``).

    Attributes:
        wrong_matmul_rate: Share of matmul jobs answered with a falsified product (and a receipt signed for
            it), 0..1; 0 (the default) is an honest node. Clients and verifiers catch it and the node is
            slashed.
        seed: Decides, with each job id, which jobs are falsified (same seed and job: same answer).
    """

    wrong_matmul_rate: float = Field(default=0.0, ge=0.0, le=1.0)
    seed: int = Field(default=0, ge=0, lt=2**63)


class NodeConfig(_Section):
    """Everything a provider node needs besides its key.

    Attributes:
        data_dir: Folder for the node's state (SQLite store, benchmark, default keystore).
        keystore: Keystore file; ``data_dir/keystore.json`` when omitted.
        region: Market region, lowercase words joined by ``-`` (``eu-west``, ``us-east-1``).
        country: ISO 3166-1 alpha-2 code of the machine's country (``DE``); omitted: undisclosed, and
            clients with data-residency rules will not pick this node.
        location: Coordinates, for distance-based placement; omitted: undisclosed.
        workloads: Workloads served (names registered under the ``proxima.workloads`` entry point group).
        prices: Unit price in wei of each served workload (exactly the served ones).
        device: ``auto``, ``cpu`` or ``cuda``.
        p2p: Networking.
        chain: Chain endpoint, deployment and stake.
        capacity: Concurrency and queue.
        limits: Per-request bounds.
        settlement: Vouchers and escrow timing.
        metrics: Prometheus endpoint.
        faults: Fault injection (demos and tests; off by default).
    """

    data_dir: Annotated[Path, Field(strict=False)]
    keystore: Annotated[Path | None, Field(strict=False)] = None
    region: str = Field(default="local", min_length=1, max_length=32)
    country: str | None = None
    location: Location | None = None
    workloads: list[str] = Field(default_factory=lambda: list(DEFAULT_PRICES), min_length=1, max_length=64)
    prices: dict[str, Wei] = Field(default_factory=lambda: dict(DEFAULT_PRICES))
    device: DeviceSetting = "auto"
    p2p: P2PConfig = Field(default_factory=P2PConfig)
    chain: ChainConfig = Field(default_factory=ChainConfig)
    capacity: CapacityConfig = Field(default_factory=CapacityConfig)
    limits: LimitsConfig = Field(default_factory=LimitsConfig)
    settlement: SettlementConfig = Field(default_factory=SettlementConfig)
    metrics: MetricsConfig = Field(default_factory=MetricsConfig)
    faults: FaultsConfig = Field(default_factory=FaultsConfig)

    @field_validator("data_dir", "keystore")
    @classmethod
    def _resolve_paths(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        return None if value is None else _resolve(value, info)

    @field_validator("region")
    @classmethod
    def _check_region(cls, value: str) -> str:
        if not _REGION.match(value):
            raise ValueError(f"{value!r} must be lowercase letters and digits joined by '-', like 'eu-west'")
        return value

    @field_validator("country")
    @classmethod
    def _check_country(cls, value: str | None) -> str | None:
        if value is not None and value not in _COUNTRIES:
            hint = " (uppercase)" if value.upper() in _COUNTRIES else ""
            raise ValueError(f"{value!r} is not an ISO 3166-1 alpha-2 country code{hint}, like 'DE' or 'US'")
        return value

    @field_validator("workloads")
    @classmethod
    def _check_workloads(cls, value: list[str]) -> list[str]:
        for name in value:
            if not _WORKLOAD.match(name) or len(name) > 32:
                raise ValueError(f"{name!r} is not a workload name (lowercase, like 'matmul')")
        duplicates = sorted({n for n in value if value.count(n) > 1})
        if duplicates:
            raise ValueError(f"listed more than once: {', '.join(duplicates)}")
        return value

    @model_validator(mode="after")
    def _check_prices(self) -> NodeConfig:
        missing = [w for w in self.workloads if w not in self.prices]
        unknown = [w for w in self.prices if w not in self.workloads]
        if missing:
            raise ValueError(f"prices: no price for served workload(s) {', '.join(missing)}")
        if unknown:
            raise ValueError(
                f"prices: {', '.join(unknown)} priced but not in workloads ({', '.join(self.workloads)})"
            )
        return self

    @property
    def keystore_path(self) -> Path:
        """The keystore file: ``keystore`` if set, else ``data_dir/keystore.json``."""
        return self.keystore if self.keystore is not None else self.data_dir / "keystore.json"

    @property
    def store_path(self) -> Path:
        """The node's SQLite database, ``data_dir/node.sqlite``."""
        return self.data_dir / "node.sqlite"

    @property
    def benchmark_path(self) -> Path:
        """Where the last benchmark result is kept, ``data_dir/benchmark.json``."""
        return self.data_dir / "benchmark.json"


def default_config(
    data_dir: Path,
    *,
    region: str = "local",
    chain_url: str = "http://127.0.0.1:8545",
    deployment: Path | None = None,
    workloads: tuple[str, ...] = ("matmul", "embed"),
) -> NodeConfig:
    """A configuration that works against a local ``proxima-devnet`` (anvil on port 8545).

    Args:
        data_dir: The node's folder.
        region: Market region.
        chain_url: JSON-RPC endpoint.
        deployment: Deployment file; ``.devnet/deployment.json`` under the current folder (where
            ``proxima-devnet`` writes it by default) when omitted.
        workloads: Workloads to serve; each gets its development price from :data:`DEFAULT_PRICES`.

    Returns:
        The validated configuration.

    Raises:
        ConfigError: If an argument is invalid (for example a workload without a default price).
    """
    unpriced = [w for w in workloads if w not in DEFAULT_PRICES]
    if unpriced:
        raise ConfigError(f"no default price for workload(s) {', '.join(unpriced)}; set prices yourself")
    try:
        return NodeConfig(
            data_dir=Path(data_dir).absolute(),
            region=region,
            workloads=list(workloads),
            prices={w: DEFAULT_PRICES[w] for w in workloads},
            chain=ChainConfig(
                url=chain_url,
                deployment=Path(deployment or DEFAULT_DEPLOYMENT_PATH).absolute(),
            ),
        )
    except ValidationError as err:
        raise ConfigError("; ".join(_describe(err))) from err


def load_config(path: Path) -> NodeConfig:
    """Read and validate a TOML configuration file.

    Args:
        path: The file; relative paths inside it are relative to its folder.

    Returns:
        The validated configuration.

    Raises:
        ConfigFileError: If the file is missing, unreadable, not TOML, or invalid; the message has one line
            per problem, ``<file>: <dotted.field>: <problem>``.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as err:
        raise ConfigFileError(path, ["file not found (create one with `proxima-node init`)"]) from err
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigFileError(path, [f"cannot read it ({err})"]) from err
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise ConfigFileError(path, [f"not valid TOML: {err}"]) from err
    try:
        config = NodeConfig.model_validate(raw, context={"base_dir": path.absolute().parent})
    except ValidationError as err:
        raise ConfigFileError(path, _describe(err)) from err
    log.debug("configuration loaded", extra={"path": str(path)})
    return config


def save_config(config: NodeConfig, path: Path) -> None:
    """Write a configuration as TOML (atomically) that :func:`load_config` reads back equal.

    Paths inside the file's folder are written relative to it; others absolute. Wei amounts above TOML's
    integer range are written as strings.

    Args:
        config: The configuration.
        path: Destination file; parent folders are created.

    Raises:
        ConfigError: If the file cannot be written.
    """
    path = Path(path)
    folder = path.absolute().parent
    data = config.model_dump(mode="python", exclude_none=True)
    if config.faults == FaultsConfig():
        del data["faults"]  # fault injection is for demos and tests: not written unless set
    data = _to_toml(data, folder)
    text = "# Proxima node configuration; see `proxima-node --help`. No secrets here.\n" + tomli_w.dumps(data)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(path)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        raise ConfigError(f"cannot write configuration {path}: {err}") from err
    log.info("configuration written", extra={"path": str(path)})


def _to_toml(value: Any, folder: Path) -> Any:
    if isinstance(value, dict):
        return {k: _to_toml(v, folder) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_to_toml(v, folder) for v in value]
    if isinstance(value, Path):
        absolute = value.absolute()
        return absolute.relative_to(folder).as_posix() if absolute.is_relative_to(folder) else str(absolute)
    if isinstance(value, int) and not isinstance(value, bool) and value > _TOML_INT_MAX:
        return str(value)
    return value


def _multiaddr(text: str) -> Multiaddr:
    try:
        return Multiaddr(text)
    except Exception as err:  # multiaddr raises several types (ParseError, ValueError, binascii.Error)
        raise ValueError(f"{text!r} is not a multiaddr: {err}") from err


def _protocols(addr: Multiaddr) -> list[str]:
    return [p.name for p in addr.protocols()]


def _describe(err: ValidationError) -> list[str]:
    """One readable line per validation error: ``dotted.field: problem``."""
    lines = []
    for e in err.errors(include_url=False):
        loc = ".".join(str(part) for part in e["loc"])
        kind = e["type"]
        if kind == "extra_forbidden":
            allowed = _fields_at(e["loc"][:-1])
            problem = "unknown field (typo?)" + (
                f"; expected one of: {', '.join(allowed)}" if allowed else ""
            )
        elif kind == "missing":
            problem = "required field is missing"
        else:
            problem = str(e["msg"]).removeprefix("Value error, ")
            value = e.get("input")
            if not kind.startswith("value_error") and isinstance(value, str | int | float | bool):
                problem += f" (got {value!r})"
        lines.append(f"{loc}: {problem}" if loc else problem)
    return lines


def _fields_at(loc: tuple[int | str, ...]) -> list[str]:
    """Field names of the section at ``loc`` (for suggesting what a typo meant)."""
    model: type[BaseModel] = NodeConfig
    for part in loc:
        field = model.model_fields.get(str(part))
        nested = _model_in(field.annotation) if field is not None else None
        if nested is None:
            return []
        model = nested
    return list(model.model_fields)


def _model_in(annotation: Any) -> type[BaseModel] | None:
    candidates = typing.get_args(annotation) if isinstance(annotation, types.UnionType) else (annotation,)
    for candidate in candidates:
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return candidate
    return None
