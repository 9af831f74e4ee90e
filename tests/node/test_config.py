"""The node configuration file: real TOML files on disk, read back through load_config."""

from __future__ import annotations

import tempfile
import tomllib
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from proxima.node.config import (
    DEFAULT_PRICES,
    ConfigFileError,
    NodeConfig,
    default_config,
    load_config,
    save_config,
)
from proxima.node.errors import ConfigError
from proxima.node.identity import NodeIdentity
from proxima.sdk.chain.devnet import DEFAULT_DEPLOYMENT_PATH

PEER = NodeIdentity.from_private_key(b"\x07" * 32).peer_id_b58


def _write(folder: Path, text: str) -> Path:
    path = folder / "node.toml"
    path.write_text(text, encoding="utf-8")
    return path


def _problems(folder: Path, text: str) -> str:
    path = _write(folder, text)
    with pytest.raises(ConfigFileError) as caught:
        load_config(path)
    message = str(caught.value)
    assert all(line.startswith(f"{path}: ") for line in message.splitlines()), message
    return message


def test_default_config_round_trips_through_a_file(tmp_path: Path) -> None:
    config = default_config(tmp_path / "node")
    path = tmp_path / "node" / "node.toml"
    save_config(config, path)
    assert load_config(path) == config


def test_default_config_targets_the_local_devnet(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    config = default_config(Path("data"))
    assert config.data_dir == tmp_path / "data"
    assert config.keystore_path == tmp_path / "data" / "keystore.json"
    assert config.chain.url == "http://127.0.0.1:8545"
    assert config.chain.deployment == tmp_path / DEFAULT_DEPLOYMENT_PATH
    assert config.workloads == ["matmul", "embed"]
    assert config.prices == DEFAULT_PRICES
    assert config.chain.stake_wei == 10**18  # the devnet's minimum provider stake


def test_minimal_file_uses_defaults_and_resolves_paths_against_its_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "node"
    folder.mkdir()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    path = _write(folder, 'data_dir = "state"\nkeystore = "keys/k.json"\n[chain]\ndeployment = "../d.json"\n')
    config = load_config(Path("..") / "node" / "node.toml")
    assert config.data_dir.resolve() == (folder / "state").resolve()
    assert config.keystore_path.resolve() == (folder / "keys" / "k.json").resolve()
    assert config.chain.deployment.resolve() == (tmp_path / "d.json").resolve()
    assert config.store_path.parent == config.data_dir
    assert load_config(path).data_dir.resolve() == config.data_dir.resolve()


def test_absolute_paths_are_kept(tmp_path: Path) -> None:
    config = load_config(_write(tmp_path, f'data_dir = "{tmp_path / "abs"}"\n'))
    assert config.data_dir == tmp_path / "abs"


def test_saved_paths_inside_the_folder_are_relative(tmp_path: Path) -> None:
    folder = tmp_path / "node"
    config = default_config(folder / "data", deployment=tmp_path / "chain" / "deployment.json")
    save_config(config, folder / "node.toml")
    raw = tomllib.loads((folder / "node.toml").read_text())
    assert raw["data_dir"] == "data"
    assert raw["chain"]["deployment"] == str(tmp_path / "chain" / "deployment.json")
    moved = tmp_path / "moved"
    folder.rename(moved)
    assert load_config(moved / "node.toml").data_dir == moved / "data"


def test_full_file_with_every_section(tmp_path: Path) -> None:
    text = f"""
data_dir = "."
region = "eu-west-1"
country = "DE"
location = {{ lat = 52.52, lon = 13 }}
workloads = ["matmul"]
prices = {{ matmul = "2 gwei" }}
device = "cpu"

[p2p]
listen = ["/ip4/0.0.0.0/tcp/4001", "/ip6/::/tcp/4001"]
bootstrap = ["/ip4/10.0.0.1/tcp/4001/p2p/{PEER}", "/dns4/boot.example.org/tcp/4001/p2p/{PEER}"]
announce = ["/ip4/203.0.113.7/tcp/4001"]
heartbeat_seconds = 5
offer_ttl_seconds = 30

[chain]
url = "wss://rpc.example.org:8546/v1"
deployment = "deployment.json"
stake_wei = "12.5 ether"
confirmations = 3

[capacity]
max_concurrency = 4
max_queue = 0

[limits]
max_request_bytes = 1048576
max_matmul_dim = 4096
job_timeout_seconds = 30.5

[settlement]
voucher_redeem_threshold_wei = "0.05 ether"
voucher_redeem_interval_seconds = 600
max_unredeemed_per_client_wei = 100000000000000000
commit_margin_seconds = 0

[metrics]
enabled = false
host = "::1"
port = 9464
"""
    config = load_config(_write(tmp_path, text))
    assert config.region == "eu-west-1"
    assert config.country == "DE"
    assert config.location is not None
    assert (config.location.lat, config.location.lon) == (52.52, 13.0)
    assert config.prices == {"matmul": 2 * 10**9}
    assert config.p2p.heartbeat_seconds == 5.0
    assert config.p2p.announce == ["/ip4/203.0.113.7/tcp/4001"]
    assert config.chain.stake_wei == 12_500_000_000_000_000_000
    assert config.chain.deployment == tmp_path / "deployment.json"
    assert config.capacity.max_queue == 0
    assert config.settlement.voucher_redeem_threshold_wei == 5 * 10**16
    assert (config.metrics.enabled, config.metrics.host, config.metrics.port) == (False, "::1", 9464)
    save_config(config, tmp_path / "again.toml")
    assert load_config(tmp_path / "again.toml") == config


def test_top_level_typo_names_the_field_and_the_valid_ones(tmp_path: Path) -> None:
    message = _problems(tmp_path, 'data_dir = "."\nregoin = "eu-west"\n')
    assert "regoin: unknown field (typo?)" in message
    assert "region" in message


def test_section_typo_names_the_dotted_field(tmp_path: Path) -> None:
    message = _problems(tmp_path, 'data_dir = "."\n[p2p]\nlistn = ["/ip4/0.0.0.0/tcp/1"]\n')
    assert "p2p.listn: unknown field (typo?); expected one of: listen, bootstrap" in message


def test_unknown_section_is_an_error(tmp_path: Path) -> None:
    assert "chian: unknown field" in _problems(tmp_path, 'data_dir = "."\n[chian]\nurl = "http://x"\n')


def test_every_problem_gets_its_own_line(tmp_path: Path) -> None:
    text = 'data_dir = "."\nregion = "EU West"\n[capacity]\nmax_concurrency = 0\n[metrics]\nport = 70000\n'
    lines = _problems(tmp_path, text).splitlines()
    assert len(lines) == 3
    assert any("region: " in line and "'EU West'" in line for line in lines)
    assert any("capacity.max_concurrency: Input should be greater than or equal to 1" in ln for ln in lines)
    assert any("metrics.port: " in line and "70000" in line for line in lines)


def test_missing_data_dir_is_reported(tmp_path: Path) -> None:
    assert "data_dir: required field is missing" in _problems(tmp_path, 'region = "eu"\n')


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("prices = { matmul = -1, embed = 1 }", "prices.matmul: Input should be greater than or equal to 0"),
        ("prices = { matmul = 1.5, embed = 1 }", "prices.matmul: write wei amounts as an integer"),
        ("prices = { matmul = true, embed = 1 }", "prices.matmul: expected an amount in wei"),
        ('prices = { matmul = "1.5 wei", embed = 1 }', "not a whole number of wei"),
        ('prices = { matmul = "5 dollars", embed = 1 }', "is not an amount like"),
        ("prices = { matmul = 1 }", "prices: no price for served workload(s) embed"),
        ('workloads = ["matmul"]\nprices = { matmul = 1, embde = 2 }', "embde priced but not in workloads"),
        ("workloads = []\nprices = {}", "workloads: List should have at least 1 item"),
        ('workloads = ["matmul", "matmul"]\nprices = { matmul = 1 }', "listed more than once: matmul"),
        ('workloads = ["Mat Mul"]\nprices = { "Mat Mul" = 1 }', "is not a workload name"),
        ('device = "gpu"', "device: Input should be 'auto', 'cpu' or 'cuda'"),
        ('region = ""', "region: String should have at least 1 character"),
        ('region = "eu_west"', "lowercase letters and digits joined by '-'"),
        ('country = "de"', "not an ISO 3166-1 alpha-2 country code (uppercase)"),
        ('country = "UK"', "'UK' is not an ISO 3166-1 alpha-2 country code"),
        ('country = "DEU"', "is not an ISO 3166-1 alpha-2"),
        ("location = { lat = 91, lon = 0 }", "location.lat: Input should be less than or equal to 90"),
        (
            "location = { lat = 0, lon = -180.5 }",
            "location.lon: Input should be greater than or equal",
        ),
        ("location = { lat = nan, lon = 0 }", "location.lat: Input should be a finite number"),
        ("location = { lat = 1 }", "location.lon: required field is missing"),
        ('[p2p]\nlisten = ["/ip4/1.2.3.4/tcp/x"]', "p2p.listen.0: '/ip4/1.2.3.4/tcp/x' is not a multiaddr"),
        ('[p2p]\nlisten = ["0.0.0.0:4001"]', "p2p.listen.0: '0.0.0.0:4001' is not a multiaddr"),
        ("[p2p]\nlisten = []", "p2p.listen: List should have at least 1 item"),
        (f'[p2p]\nlisten = ["/ip4/0.0.0.0/tcp/1/p2p/{PEER}"]', "must not contain /p2p/"),
        (
            '[p2p]\nbootstrap = ["/ip4/10.0.0.1/tcp/4001"]',
            "p2p.bootstrap.0: '/ip4/10.0.0.1/tcp/4001' must",
        ),
        ('[p2p]\nbootstrap = ["/ip4/10.0.0.1/tcp/4001/p2p/xyz"]', "p2p.bootstrap.0:"),
        ('[p2p]\nannounce = ["203.0.113.7:4001"]', "p2p.announce.0: '203.0.113.7:4001' is not a multiaddr"),
        (f'[p2p]\nannounce = ["/ip4/203.0.113.7/tcp/1/p2p/{PEER}"]', "must not contain /p2p/"),
        ("[p2p]\nheartbeat_seconds = 0", "p2p.heartbeat_seconds: Input should be greater than 0"),
        (
            '[p2p]\nheartbeat_seconds = "10"',
            "p2p.heartbeat_seconds: Input should be a valid number",
        ),
        ("[p2p]\nheartbeat_seconds = inf", "p2p.heartbeat_seconds: Input should be a finite number"),
        (
            "[p2p]\nheartbeat_seconds = 60\noffer_ttl_seconds = 60",
            "p2p: offer_ttl_seconds (60.0) must",
        ),
        (
            "[p2p]\noffer_ttl_seconds = 301",
            "p2p.offer_ttl_seconds: Input should be less than",
        ),
        ('[chain]\nurl = "ftp://example.org"', "chain.url: 'ftp://example.org' is not an http(s)://"),
        ('[chain]\nurl = "http://"', "is not an http(s)://"),
        ('[chain]\nurl = "http://localhost:99999"', "has an invalid port"),
        ("[chain]\nconfirmations = -1", "chain.confirmations: Input should be greater than or equal to 0"),
        ("[chain]\nconfirmations = 1.0", "chain.confirmations: Input should be a valid integer"),
        ("[chain]\nstake_wei = 1e18", "chain.stake_wei: write wei amounts as an integer"),
        ("[capacity]\nmax_queue = true", "capacity.max_queue: Input should be a valid integer"),
        (
            "[limits]\nmax_request_bytes = 10",
            "limits.max_request_bytes: Input should be greater",
        ),
        ('[metrics]\nenabled = "yes"', "metrics.enabled: Input should be a valid boolean (got 'yes')"),
        ('[metrics]\nhost = "not a host"', "metrics.host: 'not a host' is not an IP address or host name"),
        ("[metrics]\nport = -1", "metrics.port: Input should be greater than or equal to 0"),
        (
            "[settlement]\ncommit_margin_seconds = -5",
            "settlement.commit_margin_seconds: Input",
        ),
        ("data_dir = 5", "data_dir: Input is not a valid path"),
    ],
)
def test_invalid_values_are_named(tmp_path: Path, text: str, expected: str) -> None:
    body = text if text.startswith("data_dir") else f'data_dir = "."\n{text}\n'
    if body.startswith("["):
        body = f'data_dir = "."\n{body}'
    assert expected in _problems(tmp_path, body)


def test_heartbeat_as_text_is_refused_and_shown(tmp_path: Path) -> None:
    message = _problems(tmp_path, 'data_dir = "."\n[p2p]\nheartbeat_seconds = "10"\n')
    assert "p2p.heartbeat_seconds: Input should be a valid number (got '10')" in message


def test_not_toml_is_reported_with_the_position(tmp_path: Path) -> None:
    message = _problems(tmp_path, 'data_dir = "."\nregion = eu-west\n')
    assert "not valid TOML" in message
    assert "line 2" in message


def test_missing_file_says_how_to_create_one(tmp_path: Path) -> None:
    with pytest.raises(ConfigFileError, match=r"file not found .*proxima-node init"):
        load_config(tmp_path / "absent.toml")


def test_config_error_is_a_config_error_and_value_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(tmp_path / "absent.toml")
    assert isinstance(caught.value, ValueError)
    assert caught.value.path == tmp_path / "absent.toml"  # type: ignore[attr-defined]


def test_large_wei_amounts_survive_toml_integer_limits(tmp_path: Path) -> None:
    config = default_config(tmp_path).model_copy(deep=True)
    raw = config.model_dump()
    raw["chain"]["stake_wei"] = 2**200
    big = NodeConfig.model_validate(raw)
    save_config(big, tmp_path / "node.toml")
    assert (
        '"1606938044258990275541962092341162602522202993782792835301376"'
        in (tmp_path / "node.toml").read_text()
    )
    assert load_config(tmp_path / "node.toml").chain.stake_wei == 2**200


@settings(max_examples=40, deadline=None)
@given(
    stake=st.integers(min_value=0, max_value=2**256 - 1),
    price=st.integers(min_value=0, max_value=2**256 - 1),
    region=st.from_regex(r"[a-z0-9]{1,8}(-[a-z0-9]{1,8}){0,2}", fullmatch=True),
)
def test_any_valid_config_round_trips(stake: int, price: int, region: str) -> None:
    with tempfile.TemporaryDirectory() as folder:
        base = default_config(Path(folder) / "data", workloads=("matmul",))
        raw = base.model_dump()
        raw["chain"]["stake_wei"] = stake
        raw["prices"] = {"matmul": price}
        raw["region"] = region
        config = NodeConfig.model_validate(raw)
        path = Path(folder) / "node.toml"
        save_config(config, path)
        assert load_config(path) == config


@pytest.mark.parametrize(
    ("text", "wei"),
    [
        ('"1000"', 1000),
        ('"20 gwei"', 20 * 10**9),
        ('"1.5 ether"', 15 * 10**17),
        ('" 2 ETH "', 2 * 10**18),
        ('"0.000000000000000001 ether"', 1),
        ('"1.0000000000000000010 ether"', 10**18 + 1),
        (f'"{2**256 - 1}"', 2**256 - 1),
        (f'"{2**200} gwei"', 2**200 * 10**9),
        ("9223372036854775807", 2**63 - 1),
    ],
)
def test_wei_amounts_are_exact(tmp_path: Path, text: str, wei: int) -> None:
    config = load_config(_write(tmp_path, f'data_dir = "."\n[chain]\nstake_wei = {text}\n'))
    assert config.chain.stake_wei == wei


def test_wei_above_uint256_is_refused(tmp_path: Path) -> None:
    assert "less than or equal to" in _problems(
        tmp_path, f'data_dir = "."\n[chain]\nstake_wei = "{2**256}"\n'
    )


def test_default_config_refuses_a_workload_without_a_default_price(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no default price for workload"):
        default_config(tmp_path, workloads=("matmul", "video"))


def test_default_config_validates_its_arguments(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="region"):
        default_config(tmp_path, region="Not Valid")


def test_config_is_immutable(tmp_path: Path) -> None:
    config = default_config(tmp_path)
    with pytest.raises(ValueError, match="frozen"):
        config.region = "other"  # type: ignore[misc]


def test_saved_file_holds_no_key_material(tmp_path: Path) -> None:
    config = default_config(tmp_path)
    save_config(config, tmp_path / "node.toml")
    text = (tmp_path / "node.toml").read_text()
    assert "passphrase" not in text.lower()
    assert "private" not in text.lower()
    assert text.startswith("# Proxima node configuration")
