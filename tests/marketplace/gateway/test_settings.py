"""Gateway settings from a TOML file and PROXIMA_GATEWAY_* variables; errors name the field."""

from __future__ import annotations

from pathlib import Path

import pytest

from proxima.marketplace.gateway.settings import SettingsError, load_settings, parse_wei

PEER = "/ip4/127.0.0.1/tcp/4001/p2p/16Uiu2HAm5hPxT7s3TA2f4b4YjAPzS7yLRSgdj87ysDZ6NAXMiRuY"


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for name in list(os.environ):
        if name.startswith("PROXIMA_GATEWAY_"):
            monkeypatch.delenv(name)


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "gateway.toml"
    path.write_text(text)
    return path


def test_defaults_need_nothing() -> None:
    settings = load_settings()
    assert (settings.host, settings.port, settings.payer) == ("127.0.0.1", 8080, None)
    assert settings.max_attempts == 3
    assert settings.result_cache
    assert not settings.dev_mode


def test_a_file_sets_every_section_and_paths_are_relative_to_it(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        f"""
        host = "0.0.0.0"
        port = 9000
        data_dir = "state"
        default_budget_wei = "0.5 ether"
        max_attempts = 5
        attempt_timeout_seconds = 12.5
        result_cache = false
        [chain]
        url = "https://rpc.example.org"
        deployment = "deployment.json"
        [payer]
        keystore = "keys/payer.json"
        passphrase_env = "MY_PASSPHRASE"
        [p2p]
        listen = ["/ip4/0.0.0.0/tcp/4010"]
        bootstrap = ["{PEER}"]
        [rate_limit]
        requests_per_second = 5
        burst = 10
        [matching]
        exploration_share = 0.1
        [matching.weights]
        price = 0.5
        """,
    )
    s = load_settings(path)
    assert (s.host, s.port, s.max_attempts, s.attempt_timeout_seconds, s.result_cache) == (
        "0.0.0.0",  # noqa: S104 - a value read back, nothing binds
        9000,
        5,
        12.5,
        False,
    )
    assert s.data_dir == tmp_path / "state"
    assert s.accounts_path == tmp_path / "state" / "accounts.sqlite"
    assert s.chain.deployment == tmp_path / "deployment.json"
    assert s.payer is not None
    assert s.payer.keystore == tmp_path / "keys" / "payer.json"
    assert s.payer.passphrase_env == "MY_PASSPHRASE"
    assert s.default_budget_wei == 5 * 10**17
    assert s.p2p.bootstrap == [PEER]
    assert (s.rate_limit.requests_per_second, s.rate_limit.burst) == (5, 10)
    assert s.matching.exploration_share == 0.1
    assert s.matching.weights.price == 0.5


def test_environment_overrides_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path, "port = 9000\n[rate_limit]\nburst = 10\n")
    monkeypatch.setenv("PROXIMA_GATEWAY_PORT", "9100")
    monkeypatch.setenv("PROXIMA_GATEWAY_RATE_LIMIT__BURST", "20")
    monkeypatch.setenv("PROXIMA_GATEWAY_DEFAULT_BUDGET_WEI", "20 gwei")
    monkeypatch.setenv("PROXIMA_GATEWAY_MATCHING", '{"backups": 5}')
    s = load_settings(path)
    assert (s.port, s.rate_limit.burst, s.default_budget_wei, s.matching.backups) == (9100, 20, 20 * 10**9, 5)
    assert load_settings(path, port=1234).port == 1234  # explicit arguments win


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("port = 70000", "port: Input should be less than or equal to 65535"),
        ("prot = 1", "prot: unknown field"),
        ("[rate_limit]\nburst = 0", "rate_limit.burst:"),
        ("[rate_limit]\nrequests_per_second = 'fast'", "rate_limit.requests_per_second:"),
        ("default_budget_wei = 1.5", "default_budget_wei: Value error, write wei amounts"),
        ("default_budget_wei = '1.5 wei'", "not a whole number of wei"),
        ("[chain]\nurl = 'ftp://x'", "chain.url:"),
        ("[p2p]\nbootstrap = ['/ip4/1.2.3.4/tcp/1']", "p2p.bootstrap.0:"),
        ("[p2p]\nlisten = ['/ip4/1.2.3.4/udp/1']", "p2p.listen.0:"),
        ("[payer]\npassphrase_env = 'BAD NAME'", "payer"),
        ("[payer]\ndev_account_index = 1", "dev_mode = true"),
        ("[payer]\nkeystore = 'k.json'\ndev_account_index = 1", "exactly one"),
        ("[matching]\nexploration_share = 2", "matching.exploration_share:"),
        ("host = 'not a host!'", "host:"),
        ("max_attempts = 0", "max_attempts:"),
        ("attempt_timeout_seconds = 700", "must not exceed job_timeout_seconds"),
        ("capacity_wait_seconds = -1", "capacity_wait_seconds:"),
        ("deposit_headroom_wei = '-1'", "deposit_headroom_wei:"),
    ],
)
def test_invalid_values_are_named(tmp_path: Path, text: str, says: str) -> None:
    with pytest.raises(SettingsError) as refused:
        load_settings(write(tmp_path, text))
    assert says.replace("Value error, ", "") in str(refused.value)
    assert str(refused.value).startswith(str(tmp_path / "gateway.toml"))


def test_an_environment_error_names_its_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROXIMA_GATEWAY_PORT", "eighty")
    with pytest.raises(SettingsError, match="PROXIMA_GATEWAY_PORT"):
        load_settings()
    monkeypatch.setenv("PROXIMA_GATEWAY_PORT", "80")
    monkeypatch.setenv("PROXIMA_GATEWAY_P2P", "{not json")
    with pytest.raises(SettingsError, match="p2p"):
        load_settings()


def test_missing_or_broken_files_are_reported(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="file not found"):
        load_settings(tmp_path / "nope.toml")
    with pytest.raises(SettingsError, match="not valid TOML"):
        load_settings(write(tmp_path, "port = = 1"))


def test_wei_amounts() -> None:
    assert parse_wei("1000") == 1000
    assert parse_wei("20 gwei") == 20 * 10**9
    assert parse_wei("1.5 ether") == 15 * 10**17
    assert parse_wei(7) == 7
    for bad in ("1.5", "abc", "1 btc", True, 1.0):
        with pytest.raises(ValueError, match=r"amount|wei|float"):
            parse_wei(bad)
