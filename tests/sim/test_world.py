"""Drawing a simulated world from the real data: shapes, ranges, determinism, residency, the baseline."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from eth_utils.address import is_checksum_address

from proxima.sim.data import WorldData, load_world_data
from proxima.sim.world import (
    BYTES_PER_PARAM,
    CONTINENTS,
    EU_COUNTRIES,
    FLOPS_PER_TOKEN,
    MODEL_PARAMS,
    WEI_PER_ETH,
    Providers,
    RegionOutage,
    World,
    WorldConfig,
    WorldConfigError,
    build_world,
    region_of,
)


@pytest.fixture(scope="module")
def data() -> WorldData:
    return load_world_data()


@pytest.fixture(scope="module")
def world(data: WorldData) -> World:
    return build_world(data, WorldConfig(providers=10_000, clients=5_000, seed=7))


def _columns(pool: Providers) -> dict[str, np.ndarray]:
    return {name: getattr(pool, name) for name in pool.__dataclass_fields__ if not name.startswith("_")}


def _same(a: World, b: World) -> bool:
    for pool_a, pool_b in ((a.providers, b.providers), (a.hyperscale, b.hyperscale)):
        for name, column in _columns(pool_a).items():
            other = _columns(pool_b)[name]
            if isinstance(column, np.ndarray) and not np.array_equal(column, other):
                return False
    clients = ("client_country", "client_weight", "client_latency_target_ms", "client_residency")
    return all(np.array_equal(getattr(a, n), getattr(b, n)) for n in clients)


def test_same_seed_same_world_other_seed_other_world(data: WorldData) -> None:
    config = WorldConfig(providers=500, clients=300, seed=3)
    first, second = build_world(data, config), build_world(data, config)
    assert _same(first, second)
    assert first.providers.addresses() == second.providers.addresses()
    other = build_world(data, WorldConfig(providers=500, clients=300, seed=4))
    assert not _same(first, other)
    assert set(first.providers.addresses()).isdisjoint(other.providers.addresses())


def test_provider_columns_have_one_row_per_provider_and_sane_values(world: World) -> None:
    p = world.providers
    n = world.config.providers
    assert len(p) == n
    for name, column in _columns(p).items():
        if isinstance(column, np.ndarray):
            assert column.shape == (n,), name
    assert p.country.dtype == np.int32
    assert p.gpu.dtype == np.int32
    assert p.price_wei_per_unit.dtype == np.int64
    assert ((p.country >= 0) & (p.country < len(world.data.countries))).all()
    assert ((p.gpu >= 0) & (p.gpu < len(world.data.gpus))).all()
    assert set(np.unique(p.gpus).tolist()) <= {1, 2, 4, 8}
    assert np.array_equal(p.slots, p.gpus * world.config.streams_per_gpu)
    assert (p.price_wei_per_unit > 0).all()
    assert (p.price_usd_h > 0).all()
    assert all(isinstance(s, int) and s >= world.config.min_stake_wei for s in p.stake_wei)
    assert 1.2 * WEI_PER_ETH < float(np.median(p.stake_wei.astype(float))) < 3 * WEI_PER_ETH
    assert (p.mtbf_s > 0).all()
    assert (p.mttr_s > 0).all()
    assert np.median(p.mtbf_s) == pytest.approx(world.config.mean_up_s, rel=0.1)


def test_every_gpu_model_appears_and_faster_hardware_is_faster(world: World) -> None:
    p = world.providers
    assert np.bincount(p.gpu, minlength=len(world.data.gpus)).min() > 0
    names = [g.name for g in world.data.gpus]
    rate = {names[g]: float(p.tokens_per_s[p.gpu == g][0]) for g in range(len(names))}
    assert rate["B200-180GB"] > rate["H100-SXM5-80GB"] > rate["A100-SXM4-80GB"] > rate["RTX-3090"]
    # The documented throughput model, for one H100 SXM5 provider.
    h100 = world.data.gpus[names.index("H100-SXM5-80GB")]
    i = int(np.flatnonzero(p.gpu == names.index("H100-SXM5-80GB"))[0])
    config = world.config
    prefill = h100.fp16_tflops * 1e12 * config.prefill_efficiency / FLOPS_PER_TOKEN / config.streams_per_gpu
    decode = h100.bandwidth_gbps * 1e9 * config.decode_efficiency / (MODEL_PARAMS * BYTES_PER_PARAM)
    assert p.prefill_tokens_per_s[i] == pytest.approx(prefill)
    assert p.decode_tokens_per_s[i] == pytest.approx(decode)
    assert p.flops_per_s[i] == pytest.approx(prefill * FLOPS_PER_TOKEN)
    idx = np.array([i, i])
    assert p.service_time_s(idx, np.array([1000, 0]), np.array([0, 100])).tolist() == pytest.approx(
        [1000 / prefill, 100 / decode]
    )
    assert p.first_token_s(idx[:1], np.array([500]))[0] == pytest.approx(500 / prefill + 1 / decode)


def test_prices_convert_hourly_prices_to_wei_per_token(world: World) -> None:
    p, config = world.providers, world.config
    usd_per_token = p.price_usd_h / (
        3600 * p.tokens_per_s * config.streams_per_gpu * config.price_utilisation
    )
    expected = np.rint(usd_per_token / config.eth_usd * WEI_PER_ETH)
    assert np.array_equal(p.price_wei_per_unit, expected.astype(np.int64))
    # Each model's prices stay inside its market's range.
    quantiles = world.data.prices.quantiles_usd_h[p.gpu]
    assert ((p.price_usd_h >= quantiles[:, 0] - 1e-9) & (p.price_usd_h <= quantiles[:, -1] + 1e-9)).all()
    # An H100 token costs cents per million tokens, not dollars (8B model).
    per_million_usd = float(np.median(usd_per_token)) * 1e6
    assert 0.01 < per_million_usd < 1.0


def test_cheaters_share_and_rates(world: World) -> None:
    p, config = world.providers, world.config
    assert (~p.honest).mean() == pytest.approx(config.cheater_share, abs=0.01)
    assert (p.cheat_rate[p.honest] == 0).all()
    low, high = config.cheat_rate
    assert ((p.cheat_rate[~p.honest] >= low) & (p.cheat_rate[~p.honest] <= high)).all()
    assert (p.failure_rate[p.honest] == config.failure_rate).all()


def test_providers_sit_where_infrastructure_is_and_clients_spread_wider(world: World) -> None:
    data = world.data
    provider_share = np.bincount(world.providers.country, minlength=len(data.countries)) / len(
        world.providers
    )
    client_share = np.bincount(world.client_country, minlength=len(data.countries)) / world.clients
    us = data.country_index("US")
    assert provider_share.argmax() == us
    expected = data.pings / data.pings.sum()
    assert provider_share[us] == pytest.approx(expected[us], abs=0.02)
    # Concentration (Herfindahl) is lower for clients (pings ** 0.5).
    assert (client_share**2).sum() < (provider_share**2).sum()
    assert (client_share > 0).sum() > (provider_share > 0).sum() * 0.9


def test_client_targets_and_weights(world: World) -> None:
    config = world.config
    target = world.client_latency_target_ms
    interactive = world.client_interactive
    assert interactive.mean() == pytest.approx(config.interactive_share, abs=0.03)
    assert ((target[interactive] >= 150) & (target[interactive] <= 300)).all()
    assert ((target[~interactive] >= 1_000) & (target[~interactive] <= 5_000)).all()
    assert world.client_weight.sum() == pytest.approx(1.0)
    assert (world.client_weight > 0).all()


def test_residency_restricts_only_eu_clients_to_eu_countries(world: World) -> None:
    data = world.data
    assert world.residency_sets == (tuple(sorted(EU_COUNTRIES & set(data.countries))),)
    assert world.residency_allowed.shape == (1, len(data.countries))
    allowed_codes = {c for c, ok in zip(data.countries, world.residency_allowed[0], strict=True) if ok}
    assert allowed_codes == set(world.residency_sets[0])
    restricted = world.client_residency >= 0
    client_codes = np.array(data.countries)[world.client_country]
    assert all(c in EU_COUNTRIES for c in client_codes[restricted])
    eu_clients = np.isin(client_codes, list(EU_COUNTRIES))
    assert restricted.sum() / eu_clients.sum() == pytest.approx(world.config.residency_share, abs=0.05)
    # allowed(): restricted clients only reach EU providers, the others reach everyone.
    clients = np.flatnonzero(restricted)[:20]
    free = np.flatnonzero(~restricted)[:20]
    countries = world.providers.country[:200]
    in_eu = np.isin(np.array(data.countries)[countries], list(EU_COUNTRIES))
    assert np.array_equal(
        world.allowed(clients[:, None], countries[None, :]), np.tile(in_eu, (len(clients), 1))
    )
    assert world.allowed(free[:, None], countries[None, :]).all()


def test_rtt_between_clients_and_providers_comes_from_the_matrix(world: World) -> None:
    clients = np.arange(10)
    countries = world.providers.country[:10]
    rtt = world.rtt_ms(clients, countries)
    assert np.array_equal(rtt, world.data.rtt_ms[world.client_country[:10], countries])


def test_hyperscale_pool_is_one_region_of_h100s_at_cloud_prices(world: World) -> None:
    h = world.hyperscale
    data, config = world.data, world.config
    assert (h.country == data.country_index("US")).all()
    assert (h.gpu == data.gpu_index("H100-SXM5-80GB")).all()
    assert (h.gpus == 8).all()
    market_slots = int(world.providers.slots.sum())
    assert market_slots <= int(h.slots.sum()) < market_slots + 8 * config.streams_per_gpu
    assert (h.price_usd_h == config.hyperscale_price_usd_h).all()
    assert h.honest.all()
    assert (h.cheat_rate == 0).all()
    assert np.isinf(h.mtbf_s).all()
    assert set(h.addresses()).isdisjoint(world.providers.addresses()[:1000])
    # Elsewhere when configured.
    other = build_world(
        data, WorldConfig(providers=50, clients=10, hyperscale_region="DE", hyperscale_slots=100)
    )
    assert (other.hyperscale.country == data.country_index("DE")).all()
    assert int(other.hyperscale.slots.sum()) == 128


def test_addresses_are_unique_checksummed_and_stable(data: WorldData) -> None:
    world = build_world(data, WorldConfig(providers=300, clients=10, seed=11))
    addresses = world.providers.addresses()
    assert len(set(addresses)) == 300
    assert all(is_checksum_address(a) for a in addresses)
    assert world.providers.addresses() is addresses


def test_region_outage_takes_down_the_region(data: WorldData) -> None:
    outage = RegionOutage.of_region("europe", start_s=60.0, duration_s=120.0)
    assert outage.ends_s() == 180.0
    assert "DE" in outage.countries
    assert "US" not in outage.countries
    world = build_world(data, WorldConfig(providers=2_000, clients=10, seed=1, outage=outage))
    down = world.outage_mask(world.providers)
    codes = np.array(data.countries)[world.providers.country]
    assert np.array_equal(down, np.isin(codes, list(CONTINENTS["europe"])))
    assert 0 < down.mean() < 1
    assert not world.outage_mask(world.hyperscale).any()
    assert not build_world(data, WorldConfig(providers=10, clients=10)).outage_mask(world.providers).any()
    assert set(RegionOutage.of_region("eu", 0, 1).countries) == EU_COUNTRIES
    with pytest.raises(WorldConfigError, match="outage region must be one of eu"):
        RegionOutage.of_region("atlantis", 0, 1)
    with pytest.raises(WorldConfigError, match=r"outage\.duration_s"):
        RegionOutage(("DE",), 0.0, 0.0)


def test_region_labels() -> None:
    assert region_of("DE") == "europe"
    assert region_of("NG") == "africa"
    assert region_of("BR") == "south-america"
    assert region_of("JP") == "asia"
    assert region_of("US") == "north-america"
    assert region_of("AU") == "oceania"
    assert region_of("ZZ") == "other"


def test_every_data_country_has_a_region(data: WorldData) -> None:
    world = build_world(data, WorldConfig(providers=10, clients=10))
    assert "other" not in world.country_region


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"providers": 0}, "providers"),
        ({"clients": 1.5}, "clients"),
        ({"seed": -1}, "seed"),
        ({"cheater_share": 1.5}, "cheater_share"),
        ({"cheat_rate": (0.6, 0.2)}, "cheat_rate"),
        ({"mean_up_s": 0.0}, "mean_up_s"),
        ({"mean_down_s": math.inf}, "mean_down_s"),
        ({"eth_usd": -1.0}, "eth_usd"),
        ({"gpu_counts": ((0, 1.0),)}, "gpu_counts"),
        ({"gpu_mix": {"RTX-4090": -1.0}}, "gpu_mix"),
        ({"interactive_target_ms": (300.0, 150.0)}, "interactive_target_ms"),
        ({"price_utilisation": 0.0}, "price_utilisation"),
        ({"min_stake_wei": 0}, "min_stake_wei"),
    ],
)
def test_bad_config_names_the_field(changes: dict[str, object], field: str) -> None:
    with pytest.raises(WorldConfigError, match=f"world config {field} must be"):
        WorldConfig(**changes)  # type: ignore[arg-type]


def test_config_naming_unknown_data_is_rejected(data: WorldData) -> None:
    with pytest.raises(WorldConfigError, match="no country 'XX'"):
        build_world(data, WorldConfig(providers=10, clients=10, hyperscale_region="XX"))
    with pytest.raises(WorldConfigError, match="gpu_mix"):
        build_world(data, WorldConfig(providers=10, clients=10, gpu_mix={"K80": 1.0}))


def test_gpu_mix_is_honoured(data: WorldData) -> None:
    world = build_world(
        data, WorldConfig(providers=1_000, clients=10, gpu_mix={"RTX-4090": 3, "B200-180GB": 1})
    )
    names = np.array([g.name for g in data.gpus])[world.providers.gpu]
    assert set(names) == {"RTX-4090", "B200-180GB"}
    assert (names == "RTX-4090").mean() == pytest.approx(0.75, abs=0.05)


def test_summary_reports_the_drawn_world(world: World) -> None:
    summary = world.summary()
    p = world.providers
    assert summary["providers"] == len(p)
    assert summary["provider_slots"] == int(p.slots.sum())
    assert sum(summary["providers_by_region"].values()) == len(p)
    assert sum(summary["clients_by_region"].values()) == world.clients
    assert sum(summary["gpu_mix"].values()) == len(p)
    assert summary["cheaters"] == int((~p.honest).sum())
    assert summary["hyperscale"]["country"] == "US"
    assert summary["hyperscale"]["price_usd_h"] == world.config.hyperscale_price_usd_h
    assert json.loads(json.dumps(summary)) == summary
