"""Provider nodes as separate OS processes on 127.0.0.1 against anvil, driven through ``proxima-node``.

One module-scoped network: anvil with the contracts, three nodes started with ``proxima-node start`` (one
serving embed too), bootstrapped to the first. A client peer in the test process follows the offers and runs
jobs over ``/proxima/job/1.0.0``, paying with vouchers and escrow; one node is killed mid-job and restarted.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
import pytest
import trio
from _nodes import (
    NodeProcess,
    node_cli,
    node_env,
    node_job_state,
    node_metrics,
    start_node,
    stop_node,
    wait_ready,
)
from eth_account.signers.local import LocalAccount
from libp2p.peer.id import ID

from proxima.node.service import read_status
from proxima.sdk.bindings import ProximaContracts
from proxima.sdk.bindings.escrow import JobStatus
from proxima.sdk.chain import AnvilProcess, Deployment, RpcChain, dev_accounts
from proxima.sdk.deploy import deploy_all
from proxima.sdk.eip712 import LocalSigner, Voucher
from proxima.sdk.jobclient import JobRejectedError, request_quote, run_job
from proxima.sdk.jobs import (
    Domains,
    EscrowPayment,
    JobFailure,
    JobRequest,
    JobResult,
    QuoteRequest,
    VoucherPayment,
    decode_response,
    sign_request,
)
from proxima.sdk.offers import OfferBook, OfferValidator, StakeCache
from proxima.sdk.p2p import JOB_PROTOCOL, OFFER_TOPIC, Peer, open_peer
from proxima.sdk.wire import read_frame
from proxima.sdk.workloads import (
    EmbedOutput,
    MatmulInput,
    MatmulOutput,
    Tensor,
    matmul_operands,
    result_hash,
)

pytestmark = [pytest.mark.anvil, pytest.mark.slow]

ETH = 10**18
T = TypeVar("T")


@dataclass
class Network:
    anvil: AnvilProcess
    chain: RpcChain
    contracts: ProximaContracts
    deployment: Deployment
    domains: Domains
    nodes: list[NodeProcess]
    client: LocalAccount


@pytest.fixture(scope="module")
def network(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Network]:
    root = tmp_path_factory.mktemp("nodes")
    accounts = dev_accounts(8)
    with AnvilProcess() as anvil, anvil.connect() as chain:
        deployment = deploy_all(chain, chain.accounts[0]).model_copy(update={"rpc_url": anvil.url})
        deployment_path = deployment.save(root / "deployment.json")
        contracts = ProximaContracts.from_deployment(chain, deployment)
        specs = [
            ("node0", "eu-west", "DE", "matmul,embed", accounts[5]),
            ("node1", "us-east", "US", "matmul", accounts[6]),
            ("node2", "ap-south", "SG", "matmul", accounts[7]),
        ]
        nodes: list[NodeProcess] = []
        try:
            for name, region, country, workloads, account in specs:
                node = NodeProcess(name, root / name, account, root / f"{name}.log")
                args = [
                    "init",
                    "--data-dir", str(node.data_dir),
                    "--region", region,
                    "--country", country,
                    "--workloads", workloads,
                    "--chain-url", anvil.url,
                    "--deployment", str(deployment_path),
                    "--stake", "2",
                    "--max-concurrency", "1",
                    "--import-key-env", "NODE_KEY",
                ]  # fmt: skip
                if nodes:
                    args += ["--bootstrap", nodes[0].addrs[0]]
                done = node_cli(*args, env=node_env(NODE_KEY=bytes(account.key).hex()))
                assert done.returncode == 0, done.stderr
                assert account.address in done.stdout
                nodes.append(node)
                start_node(node)
                if len(nodes) == 1:
                    wait_ready(node)
            for node in nodes[1:]:
                wait_ready(node)
            yield Network(
                anvil, chain, contracts, deployment, Domains.from_deployment(deployment), nodes, accounts[1]
            )
        finally:
            for node in nodes:
                if node.proc is not None and node.proc.poll() is None:
                    stop_node(node)


def _in_client(network: Network, body: Callable[[Peer, OfferBook], Awaitable[T]]) -> T:
    """Run ``body`` with a client peer connected to node0 and following the offers."""

    async def main() -> T:
        async with open_peer(bytes(network.client.key), bootstrap=[network.nodes[0].addrs[0]]) as peer:
            assert peer.pubsub is not None
            validator = OfferValidator(StakeCache(network.contracts.registry.is_active_provider))
            peer.pubsub.set_topic_validator(OFFER_TOPIC, validator, False)
            book = OfferBook()
            subscription = await peer.subscribe(OFFER_TOPIC)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(book.follow, subscription)
                for node in network.nodes:
                    if node is not network.nodes[0]:
                        await peer.connect(node.addrs[0])
                result = await body(peer, book)
                nursery.cancel_scope.cancel()
            return result

    return trio.run(main)


async def _wait_for_offers(book: OfferBook, providers: set[str], timeout: float = 60.0) -> None:
    with trio.fail_after(timeout):
        while not providers <= {s.offer.provider for s in book.offers(time.time())}:
            await trio.sleep(0.2)


def _voucher_request(
    network: Network,
    node: NodeProcess,
    workload: str,
    payload: dict[str, Any],
    paid: int,
    jobs: int,
    *,
    client: LocalAccount | None = None,
) -> JobRequest:
    client = client or network.client
    voucher = Voucher(
        client=client.address,
        provider=node.account.address,
        cumulative_amount=paid,
        cumulative_jobs=jobs,
    ).sign(LocalSigner(client), network.domains.vouchers_domain)
    request = JobRequest(
        job_id="0x" + os.urandom(32).hex(),
        client=client.address,
        provider=node.account.address,
        workload=workload,
        input=payload,
        payment=VoucherPayment(voucher=voucher.message, signature=voucher.signature.to_bytes()),
        issued_at=int(time.time()),
    )
    return sign_request(request, LocalSigner(client))


def _seeded(seed: int, n: int, dtype: str = "float64") -> dict[str, Any]:
    return {"seed": seed, "m": n, "k": n, "n": n, "dtype": dtype}


def _expected_product(payload: dict[str, Any]) -> np.ndarray:
    a, b = matmul_operands(MatmulInput.model_validate(payload))
    return a @ b


def test_offers_from_every_node_reach_every_peer(network: Network) -> None:
    providers = {node.account.address for node in network.nodes}

    async def body(peer: Peer, book: OfferBook) -> None:
        await _wait_for_offers(book, providers)
        for node in network.nodes:
            signed = book.get(node.account.address)
            assert signed is not None
            offer = signed.offer
            assert offer.peer_id_bytes == node.peer_id
            assert offer.measured.gemm_flops > 0
            assert offer.measured.mem_bandwidth > 0
            assert {w.name for w in offer.workloads} == (
                {"matmul", "embed"} if node.name == "node0" else {"matmul"}
            )

    _in_client(network, body)
    # Each node follows the others' offers too (gossip through node0 for node1 <-> node2).
    deadline = time.monotonic() + 30
    for node in network.nodes:
        while node_metrics(node).get("proxima_node_offers_known", 0) < len(network.nodes) - 1:
            assert time.monotonic() < deadline, f"{node.name} does not know the other offers"
            time.sleep(0.5)


def test_client_runs_matmul_and_embed_jobs_with_valid_receipts(network: Network) -> None:
    c = network.contracts
    c.vouchers.deposit(network.client, ETH)
    node0, node1, _ = network.nodes

    async def body(peer: Peer, book: OfferBook) -> list[JobResult]:
        await _wait_for_offers(book, {node0.account.address, node1.account.address})
        price = {
            n.account.address: {w.name: w.unit_price_wei for w in book.get(n.account.address).offer.workloads}  # type: ignore[union-attr]
            for n in (node0, node1)
        }
        results = []
        matmul = _seeded(7, 256)
        request = _voucher_request(
            network, node1, "matmul", matmul, price[node1.account.address]["matmul"], 1
        )
        results.append(await run_job(peer, node1.peer_id, request, domains=network.domains))
        texts = {
            "model": "all-MiniLM-L6-v2",
            "texts": ["a cat sat on the mat", "a kitten on a rug", "tax law"],
        }
        units = 1
        request = _voucher_request(
            network, node0, "embed", texts, price[node0.account.address]["embed"] * units, 1
        )
        results.append(await run_job(peer, node0.peer_id, request, domains=network.domains, timeout=120))
        return results

    matmul_result, embed_result = _in_client(network, body)
    product = MatmulOutput.model_validate(matmul_result.output).c.to_array()
    np.testing.assert_allclose(product, _expected_product(_seeded(7, 256)), rtol=1e-9)
    assert matmul_result.receipt.provider == node1.account.address
    assert matmul_result.receipt.compute_micros > 0
    vectors = EmbedOutput.model_validate(embed_result.output).embeddings.to_array()
    assert vectors.shape == (3, 384)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-3)
    assert vectors[0] @ vectors[1] > vectors[0] @ vectors[2]
    counted = node_metrics(node1)
    assert counted.get("proxima_node_jobs_total{outcome=ok,workload=matmul}", 0) >= 1


def test_node_killed_mid_job_honours_the_escrow_job_after_restart(network: Network) -> None:
    c = network.contracts
    node2 = network.nodes[2]
    # 69 GFLOP in float64 (the largest product the output bound allows): seconds on two cores, so the kill
    # lands while it computes.
    payload = {"seed": 11, "m": 2896, "k": 4096, "n": 2896, "dtype": "float64"}

    async def quote_and_send(peer: Peer, book: OfferBook) -> str:
        await _wait_for_offers(book, {node2.account.address})
        quote = await request_quote(
            peer,
            node2.peer_id,
            QuoteRequest(client=network.client.address, workload="matmul", input=payload),
            domains=network.domains,
        )
        await trio.to_thread.run_sync(c.escrow.open_job, network.client, quote.signed())
        job_id = "0x" + quote.terms.job_id.hex()
        request = sign_request(
            JobRequest(
                job_id=job_id,
                client=network.client.address,
                provider=node2.account.address,
                workload="matmul",
                input=payload,
                payment=EscrowPayment(),
                issued_at=int(time.time()),
            ),
            LocalSigner(network.client),
        )
        async with trio.open_nursery() as nursery:

            async def send() -> None:
                try:
                    await run_job(peer, node2.peer_id, request, domains=network.domains, timeout=60)
                except Exception:  # noqa: BLE001 - the node is killed under this request
                    return

            nursery.start_soon(send)
            with trio.fail_after(30):
                while node_job_state(node2, job_id) != "running":
                    await trio.sleep(0.02)
            assert node2.proc is not None
            node2.proc.send_signal(signal.SIGKILL)
        return job_id

    job_id = _in_client(network, quote_and_send)
    assert node2.proc is not None
    assert node2.proc.wait(timeout=30) == -signal.SIGKILL
    assert c.escrow.job_of(bytes.fromhex(job_id[2:])).status == JobStatus.ACCEPTED

    start_node(node2)
    wait_ready(node2)
    expected = result_hash("matmul", MatmulOutput(c=Tensor.from_array(_expected_product(payload))))
    deadline = time.monotonic() + 60
    while c.escrow.job_of(bytes.fromhex(job_id[2:])).status != JobStatus.DELIVERED:
        assert time.monotonic() < deadline, node2.log_text()[-4000:]
        time.sleep(0.3)
    assert c.escrow.job_of(bytes.fromhex(job_id[2:])).result_hash == expected


def test_bad_requests_and_a_flood_get_typed_errors_and_the_node_keeps_serving(network: Network) -> None:
    node0 = network.nodes[0]
    stranger = dev_accounts(9)[8]  # no voucher deposit

    async def raw_exchange(peer: Peer, frame: bytes) -> JobFailure | None:
        stream = await peer.host.new_stream(ID(node0.peer_id), [JOB_PROTOCOL])
        try:
            await stream.write(frame)
            answer = decode_response(await read_frame(stream, 1 << 16))
        except Exception:  # noqa: BLE001 - a reset counts as "no typed answer"
            return None
        finally:
            with contextlib.suppress(Exception):
                await stream.close()
        return answer if isinstance(answer, JobFailure) else None

    async def body(peer: Peer, book: OfferBook) -> dict[str, list[str]]:
        await _wait_for_offers(book, {node0.account.address})
        codes: dict[str, list[str]] = {"malformed": [], "too_large": [], "flood": []}
        garbage = len(b"not json").to_bytes(4, "big") + b"not json"
        huge = (2**31).to_bytes(4, "big")
        for label, frame in (("malformed", garbage), ("too_large", huge)):
            failure = await raw_exchange(peer, frame)
            codes[label].append(failure.code.value if failure else "none")

        async def one(i: int) -> None:
            failure = await raw_exchange(peer, garbage if i % 2 else huge)
            codes["flood"].append(failure.code.value if failure else "none")

        async with trio.open_nursery() as nursery:
            for i in range(60):
                nursery.start_soon(one, i)
        unpaid = _voucher_request(network, node0, "matmul", _seeded(3, 32), 10**15, 1, client=stranger)
        with pytest.raises(JobRejectedError) as rejected:
            await run_job(peer, node0.peer_id, unpaid, domains=network.domains)
        codes["unpaid"] = [rejected.value.code.value]
        unknown = _voucher_request(network, node0, "matmul", {"seed": 1, "m": 0, "k": 1, "n": 1}, 1, 1)
        with pytest.raises(JobRejectedError) as invalid:
            await run_job(peer, node0.peer_id, unknown, domains=network.domains)
        codes["invalid"] = [invalid.value.code.value]
        return codes

    codes = _in_client(network, body)
    assert codes["malformed"] == ["malformed"]
    assert codes["too_large"] == ["too_large"]
    assert len(codes["flood"]) == 60
    assert set(codes["flood"]) <= {"malformed", "too_large", "busy"}
    assert codes["unpaid"] == ["unpaid"]
    assert codes["invalid"] == ["invalid_input"]

    # ...and an honest client is still served afterwards.
    honest_client = dev_accounts(3)[2]
    network.contracts.vouchers.deposit(honest_client, ETH)

    async def honest(peer: Peer, book: OfferBook) -> JobResult:
        request = _voucher_request(network, node0, "matmul", _seeded(5, 64), 10**15, 1, client=honest_client)
        return await run_job(peer, node0.peer_id, request, domains=network.domains)

    result = _in_client(network, honest)
    product = MatmulOutput.model_validate(result.output).c.to_array()
    np.testing.assert_allclose(product, _expected_product(_seeded(5, 64)), rtol=1e-9)


def test_ctrl_c_stops_a_node_cleanly(network: Network) -> None:
    node1 = network.nodes[1]
    assert stop_node(node1, signal.SIGINT) == 0
    assert read_status(node1.data_dir) is None
    assert "node stopped" in node1.log_text()
