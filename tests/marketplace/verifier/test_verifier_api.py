"""The verifier's HTTP API on a real anvil deployment: canaries committed on chain before the answer, verdicts
on honest and wrong results that the contracts accept, bad evidence refused with 4xx naming the field."""

from __future__ import annotations

import asyncio
import hashlib
import secrets
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from conftest import VerifierNet, make_service
from eth_account.signers.local import LocalAccount

from proxima.marketplace.verifier.app import create_app
from proxima.marketplace.verifier.client import VerifierClient, VerifierRefusedError, VerifierUnavailableError
from proxima.marketplace.verifier.protocol import Canary, CanaryRequest, CanaryReveal, Evidence
from proxima.marketplace.verifier.service import VerifierService
from proxima.sdk.bindings import canary_commitment
from proxima.sdk.eip712 import JobReceipt, LocalSigner, SignedMessage, Verdict, recover_signer
from proxima.sdk.workloads import (
    EmbedOutput,
    MatmulInput,
    MatmulOutput,
    Tensor,
    matmul_operands,
    result_hash,
    spec_hash,
)

pytestmark = [pytest.mark.anvil, pytest.mark.anyio]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def _client(service: VerifierService, api_key: str | None = None) -> VerifierClient:
    app = create_app(service)
    return VerifierClient("http://verifier.test", api_key=api_key, transport=httpx.ASGITransport(app=app))


@pytest.fixture
async def client(verifier: VerifierService) -> AsyncIterator[VerifierClient]:
    c = _client(verifier)
    yield c
    await c.aclose()


@pytest.fixture
async def peer_client(peer: VerifierService) -> AsyncIterator[VerifierClient]:
    c = _client(peer)
    yield c
    await c.aclose()


def _result(
    provider: LocalAccount, vnet: VerifierNet, workload: str, out: Any, job_id: bytes | None = None
) -> SignedMessage[JobReceipt]:
    receipt = JobReceipt(
        job_id=job_id or secrets.token_bytes(32),
        provider=provider.address,
        client=vnet.net.client.address,
        result_hash=result_hash(workload, out),
        queue_micros=10,
        compute_micros=1_000,
    )
    return receipt.sign(LocalSigner(provider), vnet.net.domains.faults_domain)


def _evidence(
    workload: str,
    inp: Any,
    out: Any,
    signed: SignedMessage[JobReceipt],
    *,
    target: str = "faults",
    canary: CanaryReveal | None = None,
) -> Evidence:
    return Evidence.model_validate(
        {
            "target": target,
            "workload": workload,
            "input": inp.model_dump(mode="json", exclude_none=True),
            "output": out.model_dump(mode="json"),
            "receipt": signed.message,
            "receipt_signature": signed.signature.to_bytes(),
            "canary": canary,
        }
    )


def _matmul(seed: int = 3, size: int = 48) -> tuple[MatmulInput, MatmulOutput, MatmulOutput]:
    inp = MatmulInput(seed=seed, m=size, k=size + 5, n=size - 3, dtype="float32")
    a, b = matmul_operands(inp)
    honest = a @ b
    wrong = honest.copy()
    wrong[7, 9] += 0.05 * float(np.abs(honest).max())
    return inp, MatmulOutput(c=Tensor.from_array(honest)), MatmulOutput(c=Tensor.from_array(wrong))


async def test_canary_isCommittedOnChainBeforeTheAnswer(
    client: VerifierClient, verifier: VerifierService, vnet: VerifierNet
) -> None:
    canary = await client.canary(CanaryRequest(m=40, k=30, n=20, dtype="float64"))
    faults = vnet.net.c.faults
    committer, committed_at = faults.canary_of(canary.commitment)
    assert committer == verifier.address == canary.verifier
    assert committed_at == canary.committed_at > 0
    receipt = vnet.net.chain.w3.eth.get_transaction_receipt(canary.tx)
    assert receipt["status"] == 1
    inp = MatmulInput.model_validate(canary.input)
    assert inp.dims == (40, 30, 20)
    assert inp.element_type == "float64"
    assert inp.is_seeded
    assert canary.spec_hash == spec_hash("matmul", inp)
    assert canary.commitment == canary_commitment(canary.job_id, canary.spec_hash, canary.salt)
    a, b = matmul_operands(inp)
    expected = MatmulOutput.model_validate(canary.expected).c.to_array()
    np.testing.assert_allclose(expected, a @ b, rtol=1e-12)
    again = await client.canary(CanaryRequest(m=40, k=30, n=20, dtype="float64"))
    assert len({again.job_id, canary.job_id}) == 2
    assert again.input["seed"] != canary.input["seed"]
    assert again.salt != canary.salt
    health = await client.health()
    assert health.canaries_issued == 2


async def test_canary_refusesShapesOutOfBounds(client: VerifierClient, verifier: VerifierService) -> None:
    with pytest.raises(VerifierRefusedError) as too_big:
        await client.canary(CanaryRequest(m=4096, k=2048, n=2048))
    assert (too_big.value.status, too_big.value.code) == (422, "canary_too_large")
    assert "max_canary_flops" in too_big.value.message
    transport = httpx.ASGITransport(app=create_app(verifier))
    async with httpx.AsyncClient(transport=transport, base_url="http://verifier.test") as http:
        zero = await http.post("/v1/canaries", json={"workload": "matmul", "m": 0, "k": 4, "n": 4})
        assert zero.status_code == 422
        assert zero.json()["error"]["param"] == "m"
        embed = await http.post("/v1/canaries", json={"workload": "embed", "m": 4, "k": 4, "n": 4})
        assert embed.status_code == 422
        assert "workload" in embed.json()["error"]["message"]
        huge = await http.post(
            "/v1/canaries", json={"workload": "matmul", "m": 4096, "k": 4096, "n": 4096, "dtype": "float64"}
        )
        assert huge.status_code == 422
        assert "MATMUL_MAX_ELEMENTS" in huge.json()["error"]["message"]
        garbage = await http.post(
            "/v1/canaries", content=b"{not json", headers={"content-type": "application/json"}
        )
        assert garbage.status_code == 422
    assert verifier.store.count_canaries() == 0


async def test_canary_needsAnApiKeyWhenConfigured(vnet: VerifierNet, tmp_path: Path) -> None:
    key = secrets.token_urlsafe(24)
    service = make_service(
        vnet, 0, tmp_path / "keyed", api_key_sha256=[hashlib.sha256(key.encode()).hexdigest()]
    )
    try:
        anonymous = _client(service)
        wrong = _client(service, api_key="not-the-key")
        right = _client(service, api_key=key)
        for refused in (anonymous, wrong):
            with pytest.raises(VerifierRefusedError) as err:
                await refused.canary(CanaryRequest(m=8, k=8, n=8))
            assert err.value.status == 401
            await refused.aclose()
        assert (await right.canary(CanaryRequest(m=8, k=8, n=8))).verifier == service.address
        assert (await right.info()).address == service.address
        await right.aclose()
    finally:
        service.store.close()


async def test_verdicts_honestValidAndCorruptedInvalid_andTheChainAcceptsThem(
    client: VerifierClient,
    peer_client: VerifierClient,
    verifier: VerifierService,
    peer: VerifierService,
    vnet: VerifierNet,
) -> None:
    provider = vnet.net.providers[0]
    inp, honest, wrong = _matmul()
    good = _result(provider, vnet, "matmul", honest)
    verdict = await client.verdict(_evidence("matmul", inp, honest, good))
    assert verdict.result_valid
    assert verdict.method == "freivalds"
    assert (verdict.job_id, verdict.result_hash) == (good.message.job_id, good.message.result_hash)
    faults = vnet.net.c.faults
    valid = Verdict(job_id=verdict.job_id, result_hash=verdict.result_hash, result_valid=True)
    assert recover_signer(valid, faults.domain, verdict.signature) == verifier.address == verdict.verifier

    bad = _result(provider, vnet, "matmul", wrong)
    evidence = _evidence("matmul", inp, wrong, bad)
    verdicts = [await client.verdict(evidence), await peer_client.verdict(evidence)]
    assert [v.result_valid for v in verdicts] == [False, False]
    assert "c[7, 9]" in verdicts[0].detail
    stake_before = vnet.net.c.registry.account_of(provider.address).stake
    finder = vnet.net.client
    slashed = faults.prove_invalid_result(finder, bad, [v.signature for v in verdicts])
    assert slashed > 0
    assert vnet.net.c.registry.account_of(provider.address).stake == stake_before - slashed
    assert faults.is_fault_proven(provider.address, bad.message.job_id)
    # A single verdict is below the quorum of 2.
    other = _result(provider, vnet, "matmul", wrong)
    lone = await client.verdict(_evidence("matmul", inp, wrong, other))
    with pytest.raises(Exception, match="FaultQuorumNotReached"):
        faults.prove_invalid_result(finder, other, [lone.signature])


async def test_verdicts_escrowTargetSignsInTheEscrowDomain(
    client: VerifierClient, verifier: VerifierService, vnet: VerifierNet
) -> None:
    inp, _, wrong = _matmul(seed=4)
    bad = _result(vnet.net.providers[1], vnet, "matmul", wrong)
    verdict = await client.verdict(_evidence("matmul", inp, wrong, bad, target="escrow"))
    assert not verdict.result_valid
    assert verdict.target == "escrow"
    message = Verdict(job_id=bad.message.job_id, result_hash=bad.message.result_hash, result_valid=False)
    assert recover_signer(message, vnet.net.c.escrow.domain, verdict.signature) == verifier.address
    assert recover_signer(message, vnet.net.c.faults.domain, verdict.signature) != verifier.address


async def test_verdicts_onACanary_bothVerifiersSign_andTheCanaryFaultIsProven(
    client: VerifierClient, peer_client: VerifierClient, vnet: VerifierNet
) -> None:
    canary: Canary = await client.canary(CanaryRequest(m=32, k=32, n=32))
    provider = vnet.net.providers[2]
    inp = MatmulInput.model_validate(canary.input)
    expected = MatmulOutput.model_validate(canary.expected)
    reveal = CanaryReveal(spec_hash=canary.spec_hash, salt=canary.salt)
    # An honest answer computed in another summation order passes the canary.
    a, b = matmul_operands(inp)
    other_order = MatmulOutput(c=Tensor.from_array((a.astype(np.float64) @ b).astype(np.float32)))
    ok = _result(provider, vnet, "matmul", other_order, canary.job_id)
    assert (await client.verdict(_evidence("matmul", inp, other_order, ok, canary=reveal))).result_valid

    c = expected.c.to_array().copy()
    c[3, 4] += 1.0
    wrong = MatmulOutput(c=Tensor.from_array(c))
    bad = _result(provider, vnet, "matmul", wrong, canary.job_id)
    evidence = _evidence("matmul", inp, wrong, bad, canary=reveal)
    mine = await client.verdict(evidence)
    theirs = await peer_client.verdict(
        evidence
    )  # the peer never saw this canary: on-chain commitment + Freivalds
    assert (mine.result_valid, mine.method, theirs.result_valid, theirs.method) == (
        False,
        "canary",
        False,
        "freivalds",
    )
    slashed = vnet.net.c.faults.prove_canary_fault(
        vnet.net.client, bad, canary.spec_hash, canary.salt, [mine.signature, theirs.signature]
    )
    assert slashed > 0


async def test_verdicts_refuseInconsistentEvidenceNamingTheField(
    client: VerifierClient, vnet: VerifierNet, verifier: VerifierService
) -> None:
    provider, stranger = vnet.net.providers[0], vnet.net.providers[1]
    inp, honest, wrong = _matmul(seed=5)

    async def refused(evidence: Evidence) -> VerifierRefusedError:
        with pytest.raises(VerifierRefusedError) as err:
            await client.verdict(evidence)
        assert (err.value.status, err.value.code) == (422, "invalid_evidence")
        return err.value

    signed = _result(provider, vnet, "matmul", honest)
    forged = signed.message.sign(LocalSigner(stranger), vnet.net.domains.faults_domain)
    assert "receipt_signature" in (await refused(_evidence("matmul", inp, honest, forged))).message
    swapped = _evidence("matmul", inp, wrong, signed)  # output is not what the receipt hashes
    assert "resultHash" in (await refused(swapped)).message
    other_shape = MatmulOutput(c=Tensor.from_array(np.ones((3, 3), dtype=np.float32)))
    shape_signed = _result(provider, vnet, "matmul", other_shape)
    assert "does not answer" in (await refused(_evidence("matmul", inp, other_shape, shape_signed))).message
    reveal = CanaryReveal(spec_hash=spec_hash("matmul", inp), salt=secrets.token_bytes(32))
    assert "committed" in (await refused(_evidence("matmul", inp, honest, signed, canary=reveal))).message
    bad_input = _evidence("matmul", inp, honest, signed).model_copy(update={"input": {"seed": 1}})
    assert "input" in (await refused(bad_input)).message
    assert verifier.store.count_verdicts() == 0

    transport = httpx.ASGITransport(app=create_app(verifier))
    async with httpx.AsyncClient(transport=transport, base_url="http://verifier.test") as http:
        body = _evidence("matmul", inp, honest, signed).model_dump(mode="json")
        del body["receipt"]["resultHash"]
        answer = await http.post("/v1/verdicts", json=body)
        assert answer.status_code == 422
        assert "resultHash" in answer.json()["error"]["message"]
        body = _evidence("matmul", inp, honest, signed).model_dump(mode="json")
        body["target"] = "registry"
        answer = await http.post("/v1/verdicts", json=body)
        assert (answer.status_code, answer.json()["error"]["param"]) == (422, "target")
        big = await http.post("/v1/verdicts", content=b"x", headers={"content-length": str(2**31)})
        assert big.status_code == 413


async def test_verdicts_onEmbedWithoutAModel_are503(client: VerifierClient, vnet: VerifierNet) -> None:
    from proxima.sdk.workloads import EmbedInput

    vectors = np.random.default_rng(1).standard_normal((2, 384))
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    out = EmbedOutput(model="all-MiniLM-L6-v2", embeddings=Tensor.from_array(vectors.astype(np.float32)))
    inp = EmbedInput(model="all-MiniLM-L6-v2", texts=["one", "two"])
    signed = _result(vnet.net.providers[0], vnet, "embed", out)
    with pytest.raises(VerifierUnavailableError, match="does not recompute embeddings"):
        await client.verdict(_evidence("embed", inp, out, signed))


async def test_info_and_metrics(client: VerifierClient, verifier: VerifierService, vnet: VerifierNet) -> None:
    info = await client.info()
    assert info.address == verifier.address
    assert (info.quorum, info.escrow_quorum, info.active) == (2, 2, True)
    assert info.stake == vnet.net.c.registry.account_of(verifier.address).stake
    assert info.fault_proofs == vnet.net.domains.faults
    transport = httpx.ASGITransport(app=create_app(verifier))
    async with httpx.AsyncClient(transport=transport, base_url="http://verifier.test") as http:
        await http.post("/v1/canaries", json={"m": 4, "k": 4, "n": 4})
        text = (await http.get("/metrics")).text
    assert 'proxima_verifier_canaries_total{purpose="issued"} 1.0' in text
    assert "proxima_verifier_http_requests_total" in text


async def test_verdicts_onEmbed_recomputeWithTheModel(vnet: VerifierNet, tmp_path: Path) -> None:
    from proxima.marketplace.verifier.service import SentenceEmbedder
    from proxima.sdk.workloads import EmbedInput

    service = make_service(vnet, 0, tmp_path / "embedder")
    service.embedder = SentenceEmbedder()
    client = _client(service)
    try:
        inp = EmbedInput(
            model="all-MiniLM-L6-v2", texts=["the cat sat on the mat", "proxima verifies results"]
        )
        honest_vectors = await asyncio.to_thread(service.embedder.embed, inp.texts)
        honest = EmbedOutput(model=inp.model, embeddings=Tensor.from_array(honest_vectors))
        signed = _result(vnet.net.providers[0], vnet, "embed", honest)
        verdict = await client.verdict(_evidence("embed", inp, honest, signed))
        assert verdict.result_valid, verdict.detail
        assert verdict.method == "recompute"
        swapped = EmbedOutput(model=inp.model, embeddings=Tensor.from_array(honest_vectors[::-1].copy()))
        bad = _result(vnet.net.providers[0], vnet, "embed", swapped)
        verdict = await client.verdict(_evidence("embed", inp, swapped, bad))
        assert not verdict.result_valid
        assert "embedding 0 differs" in verdict.detail
    finally:
        await client.aclose()
        service.store.close()
