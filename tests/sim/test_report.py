"""``proxima-sim report`` in a small run: the Markdown has every table, the reproduction command, the replay's
agreement and the data attribution, and the plots are valid PNG images of a sensible size."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from proxima.sim.policies import POLICIES
from proxima.sim.report import (
    ReportError,
    ReportFiles,
    ReportSettings,
    generate_report,
    parse_outage,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> ReportFiles:
    out = tmp_path_factory.mktemp("report") / "docs" / "SIMULATION.md"
    settings = ReportSettings(
        providers=16,
        clients=24,
        jobs=600,
        seed=5,
        replay_sample=2,
        command="proxima-sim report --quick --seed 5",
    )
    return generate_report(settings, out)


def test_report_has_every_table_and_the_command(written: ReportFiles) -> None:
    text = written.markdown.read_text(encoding="utf-8")
    for heading in (
        "## Baseline",
        "## Cheaters and slashing",
        "## Region outage: europe down",
        "## Traffic burst: x3",
        "## The model against the contracts",
        "## Reproducing",
        "## Data",
    ):
        assert heading in text, heading
    for column in ("p50 ms", "p95 ms", "p99 ms", "meeting target", "cost / job", "utilisation", "Gini"):
        assert column in text, column
    for policy in POLICIES:
        # one row per policy in the baseline, cheaters, outage (x2) and burst (x2) tables
        assert text.count(f"| {policy} |") == 6, policy
    assert "proxima-sim report --quick --seed 5" in text
    assert "seed 5" in text
    assert "The model and the contracts **agree**" in text
    assert "RIPE Atlas" in text
    assert "Azure LLM" in text
    assert "CC-BY 4.0" in text


def test_honest_slashed_column_is_zero(written: ReportFiles) -> None:
    text = written.markdown.read_text(encoding="utf-8")
    section = text.split("## Cheaters and slashing")[1].split("##")[0]
    rows = [line for line in section.splitlines() if line.startswith("| ") and "policy" not in line]
    assert len(rows) == len(POLICIES)
    assert all(row.rstrip(" |").endswith("| 0") for row in rows), rows


def test_plots_are_small_valid_pngs_linked_from_the_report(written: ReportFiles) -> None:
    text = written.markdown.read_text(encoding="utf-8")
    names = sorted(p.name for p in written.plots)
    assert names == ["burst_over_time.png", "cost_vs_latency.png", "latency_cdf.png", "outage_over_time.png"]
    for plot in written.plots:
        data = plot.read_bytes()
        assert data[:8] == PNG_MAGIC
        width, height = struct.unpack(">II", data[16:24])
        assert 300 <= width <= 1200
        assert 200 <= height <= 1000
        assert 5_000 < len(data) < 200_000
        assert f"](simulation/{plot.name})" in text
        assert plot.parent == written.markdown.parent / "simulation"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("europe:60:120", ("europe", 60.0, 120.0)),
        ("de:0:5.5", ("DE", 0.0, 5.5)),
        ("EU:1:1", ("eu", 1.0, 1.0)),
    ],
)
def test_parse_outage(text: str, expected: tuple[str, float, float]) -> None:
    assert parse_outage(text) == expected


@pytest.mark.parametrize("text", ["europe", "europe:1", "mars:1:2", "DE:x:2", "DE:1:0", "DE:-1:2", ":1:2"])
def test_parse_outage_names_the_flag(text: str) -> None:
    with pytest.raises(ReportError, match="--outage"):
        parse_outage(text)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("providers", 0),
        ("jobs", -1),
        ("seed", -3),
        ("burst_factor", 0.5),
        ("outage_start", 2.0),
        ("policies", ("fastest",)),
        ("replay_sample", -1),
    ],
)
def test_settings_name_the_bad_field(field: str, value: object) -> None:
    with pytest.raises(ReportError, match=field):
        ReportSettings(**{field: value})  # type: ignore[arg-type]


def test_unwritable_output_names_the_path(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    settings = ReportSettings(
        providers=8, clients=8, jobs=100, seed=1, replay_sample=0, policies=("proxima",)
    )
    with pytest.raises(ReportError, match="--out"):
        generate_report(settings, blocker / "SIMULATION.md")
