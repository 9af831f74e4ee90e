"""Embedded mode's settings and start-up errors (the market itself is tested through the client in
tests/sdk/test_client_embedded.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from proxima.marketplace.embedded import (
    EmbeddedMarket,
    EmbeddedSettings,
    EmbeddedStartError,
    load_embedded_settings,
)
from proxima.marketplace.gateway.settings import SettingsError
from proxima.sdk import AsyncClient, ClientError

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def test_embedded_defaults_differ_from_a_gateways_where_a_client_needs_it() -> None:
    settings = EmbeddedSettings()
    assert settings.deposit_headroom_wei == 0  # the client funds its own deposit
    assert settings.data_dir == Path("~/.proxima/client").expanduser()


def test_settings_come_from_a_toml_file_with_relative_paths_and_the_client_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "client.toml"
    config.write_text(
        'dev_mode = true\ndata_dir = "state"\n[chain]\ndeployment = "deployment.json"\n'
        "[payer]\ndev_account_index = 9\n",
        encoding="utf-8",
    )
    monkeypatch.setenv("PROXIMA_CLIENT_MAX_ATTEMPTS", "5")
    monkeypatch.setenv("PROXIMA_GATEWAY_MAX_ATTEMPTS", "7")  # a gateway's variable is not the client's
    settings = load_embedded_settings(config, duty_interval_seconds=2)
    assert settings.data_dir == tmp_path / "state"
    assert settings.chain.deployment == tmp_path / "deployment.json"
    assert settings.payer is not None
    assert settings.payer.dev_account_index == 9
    assert settings.max_attempts == 5
    assert settings.duty_interval_seconds == 2


def test_bad_settings_name_the_field(tmp_path: Path) -> None:
    config = tmp_path / "client.toml"
    config.write_text("[payer]\ndev_account_index = 9\nunknown = 1\n", encoding="utf-8")
    with pytest.raises(SettingsError) as bad:
        load_embedded_settings(config)
    assert "payer.unknown" in str(bad.value)
    with pytest.raises(SettingsError):
        load_embedded_settings(tmp_path / "missing.toml")


async def test_a_market_that_cannot_start_is_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(EmbeddedStartError) as no_payer:
        await EmbeddedMarket.start(EmbeddedSettings(data_dir=tmp_path))
    assert "payer" in str(no_payer.value)
    deployment = tmp_path / "deployment.json"
    with pytest.raises(ClientError) as no_deployment:  # the SDK's error type, also a MarketError
        await AsyncClient.embedded(
            {
                "dev_mode": True,
                "data_dir": tmp_path,
                "payer": {"dev_account_index": 9},
                "chain": {"deployment": str(deployment), "url": "http://127.0.0.1:9"},
            }
        )
    assert isinstance(no_deployment.value, EmbeddedStartError)
    assert str(deployment) in str(no_deployment.value)


def test_settings_errors_name_the_clients_own_variables(tmp_path: Path) -> None:
    config = tmp_path / "client.toml"
    config.write_text("max_attempts = -1\n")
    with pytest.raises(SettingsError) as info:
        load_embedded_settings(config)
    assert "PROXIMA_CLIENT_MAX_ATTEMPTS" in str(info.value)
    assert "PROXIMA_GATEWAY_" not in str(info.value)
