"""The simulator's data loader against the real shared data folder (../shared/data)."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import pytest

from proxima.sim.data import (
    COMMUNITY_PRICES_USD_H,
    DATA_ENV,
    MIN_PINGS,
    SOURCES,
    DataFileError,
    DataFolderError,
    WorldData,
    default_data_dir,
    great_circle_km,
    load_world_data,
)
from proxima.sim.errors import SimError

SUBFOLDERS = (
    "latency_ripe_atlas_country",
    "country_centroids",
    "gpu_specs_iguane",
    "gpu_specs_epoch",
    "gpu_prices_primeintellect_timeseries",
    "trace_azure_llm_2023",
)


@pytest.fixture(scope="module")
def data() -> WorldData:
    return load_world_data()


def _rtt(data: WorldData, a: str, b: str) -> float:
    return float(data.rtt_ms[data.country_index(a), data.country_index(b)])


def _csv_rows(data: WorldData) -> list[dict[str, str]]:
    with (data.data_dir / "latency_ripe_atlas_country" / "country_rtt_stat.csv").open() as f:
        return list(csv.DictReader(f))


def test_default_data_dir_is_the_environment_variable_or_the_shared_folder(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv(DATA_ENV, str(tmp_path))
    assert default_data_dir() == tmp_path
    monkeypatch.delenv(DATA_ENV)
    assert default_data_dir().resolve() == (Path(__file__).resolve().parents[3] / "shared" / "data").resolve()


def test_missing_data_folder_is_a_clear_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    monkeypatch.setenv(DATA_ENV, str(missing))
    with pytest.raises(DataFolderError) as info:
        default_data_dir()
    assert str(missing) in str(info.value)
    assert DATA_ENV in str(info.value)
    assert isinstance(info.value, SimError)
    assert isinstance(info.value, FileNotFoundError)
    with pytest.raises(DataFolderError, match="nowhere"):
        load_world_data(missing)


def test_missing_sub_folder_is_named(tmp_path: Path, data: WorldData) -> None:
    for sub in SUBFOLDERS:
        if sub != "gpu_specs_epoch":
            (tmp_path / sub).symlink_to(data.data_dir / sub)
    with pytest.raises(DataFolderError, match="gpu_specs_epoch"):
        load_world_data(tmp_path)


def test_malformed_rtt_file_names_the_file_and_column(tmp_path: Path, data: WorldData) -> None:
    for sub in SUBFOLDERS:
        if sub != "latency_ripe_atlas_country":
            (tmp_path / sub).symlink_to(data.data_dir / sub)
    broken = tmp_path / "latency_ripe_atlas_country"
    broken.mkdir()
    (broken / "country_rtt_stat.csv").write_text("cty1,cty2,rtt_cnt,rtt_std\nDE,FR,10,1\n")
    with pytest.raises(DataFileError, match=r"country_rtt_stat\.csv: missing column\(s\) rtt_avg"):
        load_world_data(tmp_path)
    (broken / "country_rtt_stat.csv").write_text("cty1,cty2,rtt_cnt,rtt_avg,rtt_std\nDE,FR,many,1,1\n")
    with pytest.raises(DataFileError, match="row 2: rtt_cnt is not a number"):
        load_world_data(tmp_path)


def test_loading_is_cached_per_folder(data: WorldData) -> None:
    assert load_world_data(data.data_dir) is data
    assert load_world_data(Path(str(data.data_dir) + "/.")) is data


def test_countries_are_joined_with_their_centroids(data: WorldData) -> None:
    assert len(data.countries) >= 150
    assert list(data.countries) == sorted(data.countries)
    for code in ("DE", "US", "JP", "NG", "BR", "IN", "ID", "ZA", "AU"):
        assert code in data.countries
    assert "EU" not in data.countries
    assert "None" not in data.countries
    with (data.data_dir / "country_centroids" / "country_centroids.csv").open() as f:
        centroids = {r["iso2"]: (float(r["lat"]), float(r["lon"])) for r in csv.DictReader(f)}
    de = data.country_index("DE")
    assert (data.lat[de], data.lon[de]) == centroids["DE"]
    assert data.names[de] == "Germany"
    with pytest.raises(DataFileError, match="no country 'XX'"):
        data.country_index("XX")


def test_rtt_matrix_is_symmetric_positive_and_complete(data: WorldData) -> None:
    n = len(data.countries)
    assert data.rtt_ms.shape == data.rtt_measured.shape == (n, n)
    assert np.isfinite(data.rtt_ms).all()
    assert (data.rtt_ms > 0).all()
    assert np.array_equal(data.rtt_ms, data.rtt_ms.T)
    assert np.array_equal(data.rtt_measured, data.rtt_measured.T)
    # About 5,000 of the 6,827 pairs qualify as measurements; the rest are fitted.
    measured_pairs = int(np.triu(data.rtt_measured, 1).sum())
    assert 4_000 < measured_pairs < n * (n - 1) // 2


def test_measured_pairs_are_the_log_normal_median_of_the_data(data: WorldData) -> None:
    checked = 0
    for row in _csv_rows(data):
        a, b = row["cty1"], row["cty2"]
        if a not in data.countries or b not in data.countries or a == b:
            continue
        i, j = data.country_index(a), data.country_index(b)
        if float(row["rtt_cnt"]) < MIN_PINGS:
            assert not data.rtt_measured[i, j], (a, b)
            continue
        if data.rtt_measured[i, j]:
            mean, std = float(row["rtt_avg"]), float(row["rtt_std"])
            assert data.rtt_ms[i, j] == pytest.approx(mean / math.sqrt(1 + (std / mean) ** 2), rel=1e-12)
            checked += 1
    assert checked > 4_000
    # Plausible against what is known of these links (the min statistic says 0.1-0.3 ms for all of them).
    assert 10 <= _rtt(data, "DE", "FR") <= 40
    assert 50 <= _rtt(data, "GB", "US") <= 100
    assert 80 <= _rtt(data, "US", "JP") <= 160
    assert 2 <= _rtt(data, "DE", "NL") <= 20
    assert _rtt(data, "DE", "FR") < _rtt(data, "DE", "US") < _rtt(data, "DE", "AU")


def test_fitted_pairs_are_plausible(data: WorldData) -> None:
    km = great_circle_km(data.lat[:, None], data.lon[:, None], data.lat[None, :], data.lon[None, :])
    fitted = ~data.rtt_measured & ~np.eye(len(data.countries), dtype=bool)
    assert fitted.any()
    # Never faster than light in fibre, never absurd.
    assert (data.rtt_ms[fitted] >= km[fitted] / 100 - 1e-9).all()
    assert (data.rtt_ms[fitted] < 800).all()
    model = data.rtt_model
    assert 0.005 < model.slope_ms_per_km < 0.03
    assert (model.height_ms >= 0).all()
    assert model.median_abs_error_ms < 30
    # The model reproduces measured pairs it was fitted on (median relative error, not each pair).
    i, j = np.nonzero(np.triu(data.rtt_measured, 1))
    predicted = model.slope_ms_per_km * km[i, j] + model.height_ms[i] + model.height_ms[j]
    assert np.median(np.abs(predicted - data.rtt_ms[i, j]) / data.rtt_ms[i, j]) < 0.25


def test_intra_country_rtt_is_the_diagonal(data: WorldData) -> None:
    rows = {r["cty1"]: r for r in _csv_rows(data) if r["cty1"] == r["cty2"]}
    de = rows["DE"]
    mean, std = float(de["rtt_avg"]), float(de["rtt_std"])
    assert _rtt(data, "DE", "DE") == pytest.approx(mean / math.sqrt(1 + (std / mean) ** 2))
    assert _rtt(data, "DE", "DE") < _rtt(data, "DE", "FR")
    diagonal = np.diag(data.rtt_ms)
    assert (diagonal > 0).all()
    assert np.median(diagonal) < 40
    assert 30 < data.intra_asn_rtt_ms < 80


def test_gpu_models_carry_spec_figures(data: WorldData) -> None:
    gpus = {g.name: g for g in data.gpus}
    h100 = gpus["H100-SXM5-80GB"]
    assert (h100.fp16_tflops, h100.memory_gb, h100.bandwidth_gbps) == pytest.approx((989.42976, 80.0, 3352.0))
    assert h100.source == "iguane"
    assert gpus["B200-180GB"].source == "epoch"
    assert gpus["B200-180GB"].fp16_tflops == pytest.approx(2250.0)
    assert gpus["H200-141GB"].memory_gb == 141.0
    assert gpus["H200-141GB"].bandwidth_gbps == pytest.approx(4800.0)
    assert gpus["RTX-4090"].memory_gb == 24.0
    for gpu in data.gpus:
        assert gpu.fp16_tflops > gpu.fp32_tflops > 0
        assert gpu.memory_gb >= 24
        assert gpu.bandwidth_gbps > 500
    assert data.gpu_index("L40S") == [g.name for g in data.gpus].index("L40S")
    with pytest.raises(DataFileError, match="no GPU model 'K80'"):
        data.gpu_index("K80")


def test_prices_come_from_the_series_or_the_documented_figures(data: WorldData) -> None:
    prices = data.prices
    assert prices.models == tuple(g.name for g in data.gpus)
    median = dict(zip(prices.models, prices.median_usd_h, strict=True))
    assert 1.5 < median["H100-SXM5-80GB"] < 4.0
    assert median["B200-180GB"] > median["H100-SXM5-80GB"] > median["A100-SXM4-80GB"]
    for name, usd in COMMUNITY_PRICES_USD_H.items():
        m = prices.models.index(name)
        assert not prices.from_series[m]
        assert median[name] == pytest.approx(usd)
    assert prices.from_series.sum() == 7
    assert (prices.offers[prices.from_series] > 0).all()
    assert (np.diff(prices.quantiles_usd_h, axis=1) >= 0).all()
    # The time series: ~957 snapshots, increasing times, H100 SXM5 present almost always.
    assert prices.median_series_usd_h.shape == (len(prices.times), len(prices.models))
    assert len(prices.times) >= 900
    assert (np.diff(prices.times) > 0).all()
    h100 = prices.median_series_usd_h[:, prices.models.index("H100-SXM5-80GB")]
    assert np.isfinite(h100).mean() > 0.95
    assert np.isnan(prices.median_series_usd_h[:, prices.models.index("RTX-4090")]).all()


def test_price_sampling_follows_the_quantiles(data: WorldData) -> None:
    prices = data.prices
    gpu = np.full(5, prices.models.index("H100-SXM5-80GB"))
    u = np.array([0.0, 0.1, 0.5, 0.9, 1.0])
    sampled = prices.sample(gpu, u)
    q = prices.quantiles_usd_h[gpu[0]]
    assert sampled.tolist() == pytest.approx([q[0], q[1], q[3], q[5], q[6]])
    dense = prices.sample(np.full(101, gpu[0]), np.linspace(0, 1, 101))
    assert (np.diff(dense) >= -1e-12).all()


def test_trace_merges_code_and_conversation_in_time_order(data: WorldData) -> None:
    trace = data.trace
    assert len(trace) == 8_819 + 19_366
    assert np.bincount(trace.kind).tolist() == [8_819, 19_366]
    assert trace.t[0] == 0.0
    assert (np.diff(trace.t) >= 0).all()
    assert 3_400 < trace.duration_s < 3_600
    assert (trace.prompt_tokens > 0).all()
    assert (trace.output_tokens >= 0).all()
    with (data.data_dir / "trace_azure_llm_2023" / "AzureLLMInferenceTrace_conv.csv").open() as f:
        first = next(csv.DictReader(f))
    assert (int(trace.prompt_tokens[0]), int(trace.output_tokens[0])) == (
        int(first["ContextTokens"]),
        int(first["GeneratedTokens"]),
    )
    per_second = np.bincount(np.floor(trace.t).astype(np.int64))
    assert per_second.max() >= 60  # bursty: the README's 67 requests in one second (code trace)


def test_every_data_folder_read_has_a_citation(data: WorldData) -> None:
    assert set(SOURCES) == set(SUBFOLDERS)
    for folder in SOURCES:
        assert (data.data_dir / folder / "SOURCE.txt").is_file()
