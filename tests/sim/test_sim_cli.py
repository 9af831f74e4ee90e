"""``proxima-sim``: argument validation naming the flag, a small run (table and JSON), the replay command,
and a missing data folder explained."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from proxima.sim.cli import main
from proxima.sim.policies import POLICIES

SMALL = ["--providers", "12", "--clients", "16", "--jobs", "300", "--seed", "4"]


@pytest.mark.parametrize(
    ("argv", "flag"),
    [
        (["run", "--providers", "0"], "--providers"),
        (["run", "--jobs", "many"], "--jobs"),
        (["run", "--seed", "-1"], "--seed"),
        (["run", "--policy", "fastest"], "--policy"),
        (["run", "--outage", "europe:10"], "--outage"),
        (["run", "--outage", "atlantis:1:2"], "--outage"),
        (["replay", "--sample", "0"], "--sample"),
        (["report", "--replay-sample", "-2"], "--replay-sample"),
        (["launch"], "launch"),
        ([], "required"),
    ],
)
def test_bad_arguments_exit_2_naming_the_flag(
    argv: list[str], flag: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    assert flag in capsys.readouterr().err


def test_run_all_policies_as_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", *SMALL, "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["policy"] for r in rows] == list(POLICIES)
    for row in rows:
        assert row["jobs"] == 300
        assert row["honest_slashed"] == 0
        assert row["seed"] == 4
        assert 0 <= row["met_target"] <= 1


def test_run_one_policy_with_an_outage_prints_a_table(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", *SMALL, "--policy", "proxima", "--outage", "europe:1:3"]) == 0
    out = capsys.readouterr().out
    assert "proxima" in out
    assert "outage europe 1s+3s" in out
    assert "cheapest" not in out


def test_run_is_deterministic(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", *SMALL, "--policy", "nearest", "--json"]) == 0
    first = json.loads(capsys.readouterr().out)
    assert main(["run", *SMALL, "--policy", "nearest", "--json"]) == 0
    second = json.loads(capsys.readouterr().out)
    for row in (first[0], second[0]):
        row.pop("wall_s")
    assert first == second


def test_replay_command_agrees(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["replay", *SMALL, "--sample", "2", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] is True
    assert report["mismatches"] == []
    assert len(report["providers"]) == 2
    assert report["agreements"] == report["comparisons"] > 0


def test_missing_data_folder_says_where_to_get_it(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", *SMALL, "--data-dir", str(tmp_path / "nowhere")]) == 1
    err = capsys.readouterr().err
    assert "nowhere" in err
    assert "PROXIMA_DATA_DIR" in err


def test_report_quick_writes_the_report_where_asked(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "SIMULATION.md"
    argv = ["report", "--quick", "--providers", "10", "--clients", "12", "--jobs", "200", "--out", str(out)]
    assert main(argv) == 0
    assert "wrote" in capsys.readouterr().out
    text = out.read_text(encoding="utf-8")
    assert "proxima-sim report --quick --providers 10 --clients 12 --jobs 200 --out" in text
    assert len(list((tmp_path / "simulation").glob("*.png"))) == 4
