"""JobSpec, its constraints and MatchingConfig: validation, canonical forms, exact price limits, the
exploration draw."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from _matching_support import job
from pydantic import ValidationError

from proxima.marketplace.matching import HardwareConstraints, JobSpec, MatchingConfig, Residency, Weights
from proxima.marketplace.matching.spec import exploration_draw, exploration_draws
from proxima.sdk.vivaldi import VivaldiCoordinate


def test_jobSpec_roundTripsThroughJson_withHexJobId() -> None:
    spec = job(
        1,
        workload="embed",
        model="all-MiniLM-L6-v2",
        units=3,
        flops=10**9,
        residency=Residency(countries=("FR", "DE", "FR")),
        hardware=HardwareConstraints(gpu_models=("  NVIDIA   H100 80GB HBM3 ",)),
        budget_wei=10**15,
        client_coordinate=VivaldiCoordinate((0.01, 0.02, 0.0)),
    )
    data = json.loads(spec.model_dump_json())
    assert data["job_id"] == "0x" + spec.job_id.hex()
    assert JobSpec.model_validate_json(spec.model_dump_json()) == spec
    assert spec.residency.countries == ("DE", "FR")  # sorted, deduplicated
    assert spec.hardware.gpu_models == ("nvidia h100 80gb hbm3",)  # case and spaces folded


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("job_id", "0x12", "64 hex digits"),
        ("job_id", b"x" * 31, "32 bytes"),
        ("units", 0, "greater than or equal to 1"),
        ("units", True, "valid integer"),
        ("units", 2.0, "valid integer"),
        ("flops", -1, "greater than or equal to 0"),
        ("workload", "Embed!", "pattern"),
        ("redundancy", 6, "less than or equal to 5"),
        ("min_reliability", 1.5, "less than or equal to 1"),
        ("latency_target_s", 0.0, "greater than 0"),
        ("latency_target_s", float("nan"), "finite"),
        ("max_price_wei", -1, "greater than or equal to 0"),
        ("budget_wei", 2**256, "less than"),
        ("client_coordinate", {"vector": [1e9, 0.0]}, "vector[0]"),
        ("surprise", 1, "Extra inputs"),
    ],
)
def test_jobSpec_rejectsBadFields_namingThem(field: str, value: object, message: str) -> None:
    fields: dict[str, object] = {"job_id": b"j" * 32, "workload": "matmul", field: value}
    with pytest.raises(ValidationError) as info:
        JobSpec.model_validate(fields)
    assert field in str(info.value)
    assert message in str(info.value)


def test_residency_refusesUndisclosedCountry() -> None:
    with pytest.raises(ValidationError, match="ZZ marks an undisclosed country"):
        Residency(countries=("DE", "ZZ"))
    with pytest.raises(ValidationError):
        Residency(countries=("de",))


def test_jobSpec_isFrozen() -> None:
    spec = job(1)
    with pytest.raises(ValidationError):
        spec.units = 5  # type: ignore[misc]


def test_priceLimit_isExactWithHugeIntegers() -> None:
    spec = job(1, units=3, max_price_wei=10**40 + 2, budget_wei=None)
    limit = spec.price_limit_wei()
    assert limit is not None
    assert 3 * limit <= 10**40 + 2 < 3 * (limit + 1)
    both = job(2, units=7, redundancy=3, max_price_wei=10**30, budget_wei=10**30)
    limit = both.price_limit_wei()
    assert limit is not None
    assert 3 * 7 * limit <= 10**30 < 3 * 7 * (limit + 1)  # the budget is the tighter one
    assert job(3).price_limit_wei() is None


def test_hardwareConstraints_needsGpu() -> None:
    assert HardwareConstraints().unconstrained
    assert HardwareConstraints(min_gpu_memory_bytes=1).needs_gpu
    assert HardwareConstraints(gpu_models=("A100",)).needs_gpu
    assert not HardwareConstraints(min_cpu_cores=4).needs_gpu
    assert not HardwareConstraints(min_cpu_cores=4).unconstrained


def test_classKey_ignoresSizePriceLimitsAndRedundancyOnly() -> None:
    base = job(1, workload="embed", units=1, flops=10)
    same = job(
        2, workload="embed", units=9, flops=99, input_bytes=5, max_price_wei=7, budget_wei=8, redundancy=3
    )
    assert base.class_key() == same.class_key()
    assert base.class_key() != job(1, workload="embed", flops=0).class_key()  # no work: no throughput filter
    assert base.class_key() != job(1, workload="embed", flops=10, min_reliability=0.5).class_key()
    assert (
        base.class_key()
        != job(1, workload="embed", flops=10, residency=Residency(regions=("eu",))).class_key()
    )


def test_explorationDraw_isDeterministicUniformAndVectorized() -> None:
    ids = [os.urandom(32) for _ in range(4000)]
    scalar = np.array([exploration_draw(i) for i in ids])
    assert np.array_equal(scalar, exploration_draws(ids))
    assert ((scalar >= 0) & (scalar < 1)).all()
    assert abs(float((scalar < 0.05).mean()) - 0.05) < 0.015
    assert exploration_draw(bytes(range(32))) != exploration_draw(bytes(32))
    assert job(5).exploration_draw() == exploration_draw(job(5).job_id)


def test_explorationDraw_matchesTheDocumentedSplitMix() -> None:
    mask = 2**64 - 1
    h = 0x9E3779B97F4A7C15
    job_id = bytes(range(32))
    for i in range(4):
        z = h ^ int.from_bytes(job_id[8 * i : 8 * i + 8], "little")
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & mask
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & mask
        h = z ^ (z >> 31)
    assert exploration_draw(job_id) == (h >> 11) / 2**53


def test_matchingConfig_validates() -> None:
    assert MatchingConfig().weight_sum == pytest.approx(1.0)
    with pytest.raises(ValidationError, match="at least one weight"):
        Weights(time=0, price=0, reliability=0)
    with pytest.raises(ValidationError, match="exploration_share"):
        MatchingConfig(exploration_share=0.9)
    with pytest.raises(ValidationError, match="surprise"):
        MatchingConfig.model_validate({"surprise": 1})
    config = MatchingConfig.model_validate_json('{"weights": {"time": 2, "price": 1, "reliability": 0}}')
    assert config.weights.as_dict() == {"time": 2.0, "price": 1.0, "reliability": 0.0}
