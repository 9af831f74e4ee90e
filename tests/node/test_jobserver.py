"""The job server end to end: real libp2p hosts on 127.0.0.1, contracts on py-evm, a SQLite store, workloads.

Every bad request gets a typed answer and the node then serves a good one. The only stand-in is the ``gate``
workload, a collaborator that blocks until the test opens it, so that "busy" is reached deterministically.
"""

from __future__ import annotations

import json
import secrets
import threading
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest
import trio
from _node_support import Deployed
from eth_account.signers.local import LocalAccount
from libp2p.peer.id import ID
from pydantic import BaseModel, ConfigDict

from proxima.node.jobserver import JobLimits, JobServer, JobServerError, QuotePolicy
from proxima.node.metrics import NodeMetrics
from proxima.node.payments import PaymentChecker
from proxima.node.store import AcceptedJob, JobState, NodeStore
from proxima.node.workloads.base import Workload, WorkloadCost
from proxima.node.workloads.matmul import MatmulWorkload
from proxima.sdk.bindings import JobStatus, ProximaContracts
from proxima.sdk.chain import InProcessChain
from proxima.sdk.eip712 import LocalSigner, Voucher
from proxima.sdk.jobclient import (
    InvalidReceiptError,
    JobRejectedError,
    check_result,
    request_quote,
    run_job,
    send_request,
)
from proxima.sdk.jobs import (
    Domains,
    ErrorCode,
    EscrowPayment,
    JobFailure,
    JobRequest,
    JobResult,
    Payment,
    QuoteRequest,
    VoucherPayment,
    decode_response,
    sign_request,
)
from proxima.sdk.p2p import JOB_PROTOCOL, Peer, open_peer
from proxima.sdk.wire import read_frame, write_frame
from proxima.sdk.workloads import MatmulOutput, Tensor, billing_units, canonical_json, parse_input

ETH = 10**18
UNIT_PRICE = 10**12
DEPOSIT = ETH // 10


@dataclass
class Net:
    """Deployed contracts; the provider (account 1) is staked, clients 4 and 5 have voucher deposits."""

    chain: InProcessChain
    c: ProximaContracts
    provider: LocalAccount
    clients: list[LocalAccount]
    unfunded: LocalAccount
    domains: Domains


@pytest.fixture
def net(deployed: Deployed) -> Net:
    accounts = deployed.chain.accounts
    for client in accounts[4:6]:
        deployed.c.vouchers.deposit(client, DEPOSIT)
    return Net(
        deployed.chain,
        deployed.c,
        accounts[1],
        accounts[4:6],
        accounts[7],
        Domains.from_deployment(deployed.deployment),
    )


# --- a workload that waits for the test ------------------------------------------------------------------


class GateInput(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")
    value: int


class GateOutput(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")
    value: int


class GateWorkload(Workload):
    """Echoes its input once the test opens the gate; counts the jobs that entered."""

    name: ClassVar[str] = "gate"
    input_model = GateInput
    output_model = GateOutput

    def __init__(self) -> None:
        super().__init__("cpu")
        self.opened = threading.Event()
        self.entered = 0
        self._lock = threading.Lock()

    def estimate(self, inp: BaseModel) -> WorkloadCost:
        return WorkloadCost(units=1, flops=0, bytes_in=0, bytes_out=0)

    def execute(self, inp: BaseModel) -> BaseModel:
        assert isinstance(inp, GateInput)
        with self._lock:
            self.entered += 1
        if inp.value < 0:
            raise RuntimeError("negative values crash this workload")
        if not self.opened.wait(timeout=30):
            raise RuntimeError("the test never opened the gate")
        return GateOutput(value=inp.value)


# --- a running node and a connected client ---------------------------------------------------------------


@dataclass
class Env:
    net: Net
    server: JobServer
    node: Peer
    client: Peer
    store: NodeStore
    gate: GateWorkload
    metrics: NodeMetrics
    paid: dict[str, tuple[int, int]] = field(default_factory=dict)

    @property
    def provider(self) -> str:
        return self.net.provider.address

    def price(self, workload: str, inp: Mapping[str, Any]) -> int:
        if workload == "gate":
            return UNIT_PRICE
        return billing_units(workload, parse_input(workload, inp)) * UNIT_PRICE

    def voucher(self, client: LocalAccount, price: int) -> VoucherPayment:
        """The next voucher of ``client``: one more job, ``price`` more wei."""
        amount, jobs = self.paid.get(client.address, (0, 0))
        amount, jobs = amount + price, jobs + 1
        self.paid[client.address] = (amount, jobs)
        voucher = Voucher(
            client=client.address, provider=self.provider, cumulative_amount=amount, cumulative_jobs=jobs
        )
        signed = voucher.sign(LocalSigner(client), self.net.domains.vouchers_domain)
        return VoucherPayment(voucher=voucher, signature=signed.signature.to_bytes())

    def request(
        self,
        inp: Mapping[str, Any],
        workload: str = "matmul",
        *,
        client: LocalAccount | None = None,
        payment: Payment | None = None,
        job_id: bytes | None = None,
        sign: bool = True,
        issued_at: int | None = None,
    ) -> JobRequest:
        """A request paid with the client's next voucher unless ``payment`` is given."""
        client = client or self.net.clients[0]
        request = JobRequest(
            job_id=job_id or secrets.token_bytes(32),
            client=client.address,
            provider=self.provider,
            workload=workload,
            input=dict(inp),
            payment=payment or self.voucher(client, self.price(workload, inp)),
            issued_at=int(time.time()) if issued_at is None else issued_at,
        )
        return sign_request(request, LocalSigner(client)) if sign else request

    async def run(self, request: JobRequest, timeout: float = 30.0) -> JobResult:
        return await run_job(
            self.client, self.node.peer_id, request, domains=self.net.domains, timeout=timeout
        )

    async def refused(self, request: JobRequest, code: ErrorCode) -> JobRejectedError:
        with pytest.raises(JobRejectedError) as info:
            await self.run(request)
        assert info.value.code is code, str(info.value)
        return info.value

    async def send(self, request: QuoteRequest | JobRequest, timeout: float = 30.0) -> Any:
        return await send_request(self.client, self.node.peer_id, request, timeout=timeout)

    async def raw(self, data: bytes, *, frame: bool = True, eof: bool = False) -> JobFailure:
        """Send ``data`` (as a frame's payload, or as raw bytes, then EOF) and read the typed failure."""
        stream = await self.client.host.new_stream(ID(self.node.peer_id), [JOB_PROTOCOL])
        try:
            await (write_frame(stream, data) if frame else stream.write(data))
            if eof:
                await stream.close_write()
            with trio.fail_after(10):
                answer = decode_response(await read_frame(stream, 1 << 20))
        finally:
            await stream.close()
        assert isinstance(answer, JobFailure), answer
        return answer

    async def good_job_works(self) -> None:
        """A fresh paid matmul still gets a correct, verified product."""
        a = np.arange(6, dtype=np.float64).reshape(2, 3)
        b = np.arange(12, dtype=np.float64).reshape(3, 4)
        inp = {"a": Tensor.from_array(a).model_dump(), "b": Tensor.from_array(b).model_dump()}
        result = await self.run(self.request(inp))
        c = MatmulOutput.model_validate(result.output).c.to_array()
        np.testing.assert_array_equal(c, a @ b)


@asynccontextmanager
async def serving(
    net: Net,
    tmp_path: Path,
    *,
    limits: JobLimits | None = None,
    store: NodeStore | None = None,
    gate: GateWorkload | None = None,
) -> AsyncIterator[Env]:
    gate = gate or GateWorkload()
    own_store = store is None
    store = store or NodeStore(tmp_path / "node.db")
    payments = PaymentChecker(net.c, net.provider.address, store, max_unredeemed_per_client=DEPOSIT)
    workloads: dict[str, Workload] = {"matmul": MatmulWorkload(), "gate": gate}
    metrics = NodeMetrics(workloads)
    try:
        async with (
            open_peer(bytes(net.provider.key), pubsub=False) as node,
            open_peer(secrets.token_bytes(32), pubsub=False) as client,
        ):
            server = JobServer(
                node,
                workloads,
                payments,
                store,
                LocalSigner(net.provider),
                net.domains,
                limits or JobLimits(max_concurrency=2, max_queue=4, read_timeout=5, job_timeout=20),
                metrics,
                {"matmul": UNIT_PRICE, "gate": UNIT_PRICE},
            )
            async with trio.open_nursery() as nursery:
                await nursery.start(server.run)
                await client.connect(node.addrs()[0])
                try:
                    yield Env(net, server, node, client, store, gate, metrics)
                finally:
                    gate.opened.set()
                    nursery.cancel_scope.cancel()
    finally:
        if own_store:
            store.close()


def seeded(m: int = 8, k: int = 8, n: int = 8, seed: int = 1) -> dict[str, Any]:
    return {"seed": seed, "m": m, "k": k, "n": n, "dtype": "float64"}


# --- good jobs -------------------------------------------------------------------------------------------


def test_voucher_job_returns_the_product_with_a_valid_receipt(net: Net, tmp_path: Path) -> None:
    async def main() -> None:
        async with serving(net, tmp_path) as env:
            a = np.random.default_rng(3).standard_normal((5, 7)).astype(np.float32)
            b = np.random.default_rng(4).standard_normal((7, 3)).astype(np.float32)
            inp = {"a": Tensor.from_array(a).model_dump(), "b": Tensor.from_array(b).model_dump()}
            request = env.request(inp)
            result = await env.run(request)  # checks the receipt signature and the result hash

            c = MatmulOutput.model_validate(result.output).c.to_array()
            np.testing.assert_allclose(c, a @ b, rtol=1e-5)
            assert result.receipt.client == request.client
            assert result.receipt.provider == net.provider.address
            assert result.receipt.compute_micros > 0
            # The receipt is what FaultProofs checks on chain.
            signed = result.signed_receipt()
            assert net.c.fault_proofs.hash_receipt(signed.message) == signed.message.digest(
                net.domains.faults_domain
            )
            stored = env.store.job(request.job_id)
            assert stored is not None
            assert stored.state is JobState.COMPLETED
            assert stored.result_hash == result.receipt.result_hash
            assert stored.job.payment == "voucher"
            account = env.store.voucher_account(request.client)
            assert account is not None
            assert account.latest is not None
            assert account.latest.message.cumulative_jobs == 1
            assert env.metrics.jobs.labels(workload="matmul", outcome="ok")._value.get() == 1

    trio.run(main)


def test_seeded_job_matches_the_operands_a_client_regenerates(net: Net, tmp_path: Path) -> None:
    async def main() -> None:
        async with serving(net, tmp_path) as env:
            inp = seeded(64, 32, 16, seed=99)
            result = await env.run(env.request(inp))
            rng = np.random.default_rng(99)
            a, b = rng.standard_normal((64, 32)), rng.standard_normal((32, 16))
            np.testing.assert_allclose(MatmulOutput.model_validate(result.output).c.to_array(), a @ b)

    trio.run(main)


def test_escrow_job_after_a_quote_and_opening_it_on_chain(net: Net, tmp_path: Path) -> None:
    async def main() -> None:
        async with serving(net, tmp_path) as env:
            client = net.clients[1]
            inp = seeded(256, 256, 256)
            quote = await request_quote(
                env.client,
                env.node.peer_id,
                QuoteRequest(client=client.address, workload="matmul", input=inp),
                domains=net.domains,
            )
            terms = quote.terms
            assert terms.price == quote.units * UNIT_PRICE == env.price("matmul", inp)
            assert terms.slash_amount == terms.price
            assert terms.accept_by < terms.delivery_deadline
            net.c.escrow.open_job(client, quote.signed())
            assert net.c.escrow.job_of(terms.job_id).status is JobStatus.ACCEPTED

            request = env.request(inp, client=client, payment=EscrowPayment(), job_id=terms.job_id)
            result = await env.run(request)
            assert result.receipt.job_id == terms.job_id
            stored = env.store.job(terms.job_id)
            assert stored is not None
            assert stored.job.payment == "escrow"
            assert stored.job.delivery_deadline == terms.delivery_deadline
            assert [s.job_id for s in env.store.pending_commits()] == [terms.job_id]
            # The result hash the node will commit is the one the client verified.
            net.c.escrow.commit_result(net.provider, terms.job_id, result.receipt.result_hash)

            # The same escrow job cannot be run for a different input.
            other = env.request(seeded(256, 256, 256, seed=2), client=client, payment=EscrowPayment())
            await env.refused(other, ErrorCode.UNPAID)

    trio.run(main)


def test_retry_of_a_finished_job_gets_the_same_result_and_a_different_job_is_a_duplicate(
    net: Net, tmp_path: Path
) -> None:
    async def main() -> None:
        async with serving(net, tmp_path) as env:
            request = env.request(seeded())
            first = await env.run(request)
            again = env.request(seeded(), job_id=request.job_id, payment=request.payment)
            assert await env.run(again) == first  # same receipt: nothing is signed twice

            other = env.request(seeded(seed=5), job_id=request.job_id)
            rejected = await env.refused(other, ErrorCode.DUPLICATE)
            assert "different job" in rejected.message

    trio.run(main)


def test_embed_job_returns_normalised_embeddings(net: Net, tmp_path: Path) -> None:
    from proxima.node.workloads.embed import EmbedWorkload

    async def main() -> None:
        async with serving(net, tmp_path) as env:
            env.server.workloads["embed"] = EmbedWorkload()
            env.server.prices["embed"] = UNIT_PRICE
            texts = ["proximity is the product", "latency is paid dozens of times"]
            inp = {"model": "all-MiniLM-L6-v2", "texts": texts}
            result = await env.run(env.request(inp, "embed"), timeout=120)
            vectors = np.asarray(result.output["embeddings"]["shape"])
            assert vectors.tolist() == [2, 384]

    trio.run(main)


# --- bad requests: each gets a typed error, then the node serves a good job ------------------------------


def test_malformed_bytes_get_malformed_and_the_node_keeps_serving(net: Net, tmp_path: Path) -> None:
    async def main() -> None:
        async with serving(net, tmp_path) as env:
            for data, problem in [
                (b"\x00\x01 not json", "not valid JSON"),
                (b'{"kind": "run", "job_id": 5}', "job_id"),
                (b'{"kind": "steal"}', "kind"),
                (
                    json.dumps({"kind": "quote", "client": "0x12", "workload": "w", "input": {}}).encode(),
                    "client",
                ),
            ]:
                failure = await env.raw(data)
                assert failure.code is ErrorCode.MALFORMED
                assert problem in failure.message
            failure = await env.raw(b"\x00\x00\x00\x10only-part", frame=False, eof=True)
            assert failure.code is ErrorCode.MALFORMED
            assert "incomplete request" in failure.message
            await env.good_job_works()

    trio.run(main)


def test_oversized_request_is_refused_unread_and_the_node_keeps_serving(net: Net, tmp_path: Path) -> None:
    limits = JobLimits(max_request_bytes=32_768, max_concurrency=1, max_queue=2)

    async def main() -> None:
        async with serving(net, tmp_path, limits=limits) as env:
            # A header announcing 2 GiB: refused at once, although no byte of the body follows.
            failure = await env.raw((2**31).to_bytes(4, "big"), frame=False)
            assert failure.code is ErrorCode.TOO_LARGE
            assert "2147483648 bytes" in failure.message
            # A real request too large: the client hears the refusal while it is still writing.
            big = np.ones((64, 64))
            inp = {"a": Tensor.from_array(big).model_dump(), "b": Tensor.from_array(big).model_dump()}
            rejected = await env.refused(env.request(inp), ErrorCode.TOO_LARGE)
            assert "32768" in rejected.message
            env.paid.clear()  # that voucher never reached the node
            await env.good_job_works()

    trio.run(main)


def test_unsigned_and_wrongly_signed_requests_are_refused(net: Net, tmp_path: Path) -> None:
    async def main() -> None:
        async with serving(net, tmp_path) as env:
            unsigned = env.request(seeded(), sign=False)
            assert "not signed" in (await env.refused(unsigned, ErrorCode.BAD_SIGNATURE)).message
            impostor = env.request(seeded(), client=net.clients[0], sign=False)
            forged = sign_request(
                impostor.model_copy(update={"client": net.unfunded.address}), LocalSigner(net.unfunded)
            ).model_copy(update={"client": net.clients[0].address})
            await env.refused(forged, ErrorCode.BAD_SIGNATURE)
            tampered = env.request(seeded()).model_copy(update={"input": seeded(seed=666)})
            await env.refused(tampered, ErrorCode.BAD_SIGNATURE)
            env.paid.clear()  # none of those vouchers was accepted
            await env.good_job_works()

    trio.run(main)


def test_unpaid_requests_are_refused_with_the_reason(net: Net, tmp_path: Path) -> None:
    async def main() -> None:
        async with serving(net, tmp_path) as env:
            no_deposit = await env.refused(env.request(seeded(), client=net.unfunded), ErrorCode.UNPAID)
            assert "insufficient_deposit" in no_deposit.message
            no_escrow = await env.refused(env.request(seeded(), payment=EscrowPayment()), ErrorCode.UNPAID)
            assert "not_found" in no_escrow.message
            client = net.clients[0]
            underpaid = env.request(seeded(), payment=env.voucher(client, 1))
            assert "underpaid" in (await env.refused(underpaid, ErrorCode.UNPAID)).message
            env.paid.clear()
            await env.good_job_works()
            replayed = env.request(seeded(), payment=env.voucher(client, 0))  # no more wei than the last one
            env.paid[client.address] = (env.paid[client.address][0], env.paid[client.address][1] - 1)
            assert "stale_voucher" in (await env.refused(replayed, ErrorCode.UNPAID)).message
            await env.good_job_works()

    trio.run(main)


def test_vouchers_arriving_out_of_order_are_both_accepted(net: Net, tmp_path: Path) -> None:
    """A client with two jobs in flight signs vouchers 1 and 2 in order; the second may arrive first."""

    async def main() -> None:
        async with serving(net, tmp_path) as env:
            first = env.request(seeded(seed=1))
            second = env.request(seeded(seed=2))  # its voucher counts 2 jobs
            results: dict[str, JobResult] = {}

            async def run(name: str, request: JobRequest, delay: float) -> None:
                await trio.sleep(delay)
                results[name] = await env.run(request)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(run, "second", second, 0.0)
                nursery.start_soon(run, "first", first, 0.3)  # arrives while the second one waits
            assert set(results) == {"first", "second"}
            account = env.store.voucher_account(net.clients[0].address)
            assert account is not None
            assert account.latest is not None
            assert account.latest.message.cumulative_jobs == 2

    trio.run(main)


def test_a_voucher_whose_predecessor_never_comes_is_refused_after_the_wait(net: Net, tmp_path: Path) -> None:
    async def main() -> None:
        async with serving(net, tmp_path, limits=JobLimits(voucher_reorder_wait=0.2)) as env:
            env.request(seeded(seed=1))  # signed, never sent
            skipping = env.request(seeded(seed=2))
            started = trio.current_time()
            assert "stale_voucher" in (await env.refused(skipping, ErrorCode.UNPAID)).message
            assert trio.current_time() - started >= 0.2

    trio.run(main)


def test_unknown_workload_is_refused(net: Net, tmp_path: Path) -> None:
    async def main() -> None:
        async with serving(net, tmp_path) as env:
            request = env.request({"x": 1}, "teleport", payment=EscrowPayment())
            failure = await env.send(request)
            assert isinstance(failure, JobFailure)
            assert failure.code is ErrorCode.UNKNOWN_WORKLOAD
            assert "'teleport'" in failure.message
            assert "matmul" in failure.message
            assert failure.job_id == request.job_id
            quote = await env.send(QuoteRequest(client=net.clients[0].address, workload="teleport", input={}))
            assert quote.code is ErrorCode.UNKNOWN_WORKLOAD
            await env.good_job_works()

    trio.run(main)


def test_huge_matrix_is_invalid_input_naming_the_dimension(net: Net, tmp_path: Path) -> None:
    async def main() -> None:
        async with serving(net, tmp_path) as env:
            huge = seeded(m=100_000)
            request = env.request(huge, payment=EscrowPayment())
            rejected = await env.refused(request, ErrorCode.INVALID_INPUT)
            assert "m" in rejected.message
            assert "4096" in rejected.message
            too_many = env.request(seeded(4096, 4096, 4096), payment=EscrowPayment())
            assert "MATMUL_MAX" in (await env.refused(too_many, ErrorCode.INVALID_INPUT)).message
            quote = await env.send(QuoteRequest(client=net.clients[0].address, workload="matmul", input=huge))
            assert quote.code is ErrorCode.INVALID_INPUT
            assert env.store.job(request.job_id) is None
            await env.good_job_works()

    trio.run(main)


def test_stale_and_future_requests_are_expired(net: Net, tmp_path: Path) -> None:
    async def main() -> None:
        async with serving(net, tmp_path) as env:
            now = int(time.time())
            old = env.request(seeded(), payment=EscrowPayment(), issued_at=now - 3_600)
            assert "ago" in (await env.refused(old, ErrorCode.EXPIRED)).message
            future = env.request(seeded(), payment=EscrowPayment(), issued_at=now + 3_600)
            assert "future" in (await env.refused(future, ErrorCode.EXPIRED)).message
            await env.good_job_works()

    trio.run(main)


def test_request_for_another_provider_is_refused(net: Net, tmp_path: Path) -> None:
    async def main() -> None:
        async with serving(net, tmp_path) as env:
            request = env.request(seeded(), payment=EscrowPayment(), sign=False)
            elsewhere = sign_request(
                request.model_copy(update={"provider": net.unfunded.address}), LocalSigner(net.clients[0])
            )
            failure = await env.send(elsewhere)
            assert failure.code is ErrorCode.MALFORMED
            assert "provider" in failure.message
            await env.good_job_works()

    trio.run(main)


def test_workload_crash_is_internal_without_internals_and_the_node_keeps_serving(
    net: Net, tmp_path: Path
) -> None:
    async def main() -> None:
        async with serving(net, tmp_path) as env:
            request = env.request({"value": -1}, "gate")
            failure = await env.send(request)
            assert failure.code is ErrorCode.INTERNAL
            assert "negative" not in failure.message
            stored = env.store.job(request.job_id)
            assert stored is not None
            assert stored.state is JobState.FAILED
            retry = await env.send(
                env.request({"value": -1}, "gate", job_id=request.job_id, payment=EscrowPayment())
            )
            assert retry.code is ErrorCode.DUPLICATE
            await env.good_job_works()

    trio.run(main)


# --- load ------------------------------------------------------------------------------------------------


def test_flood_beyond_capacity_gets_busy_at_once_and_honest_jobs_complete(net: Net, tmp_path: Path) -> None:
    limits = JobLimits(max_concurrency=1, max_queue=1, max_streams=64, read_timeout=5, job_timeout=30)

    async def main() -> None:
        async with serving(net, tmp_path, limits=limits) as env:
            first, second = env.request({"value": 1}, "gate"), env.request({"value": 2}, "gate")
            answers: dict[int, Any] = {}

            async def send(index: int, request: JobRequest) -> None:
                answers[index] = await env.send(request)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(send, 1, first)
                while env.gate.entered < 1:  # the first job holds the only slot
                    await trio.sleep(0.01)
                nursery.start_soon(send, 2, second)
                while env.server.load().free > 0:  # the second waits in the only queue place
                    await trio.sleep(0.01)

                # A flood from many signers: every request is answered "busy" while the gate is still shut.
                flood = []
                for _ in range(40):
                    stranger = env.net.chain.w3.eth.account.create()
                    flood.append(env.request({"value": 0}, "gate", client=stranger, payment=EscrowPayment()))
                busy: list[JobFailure] = []

                async def flood_one(request: JobRequest) -> None:
                    busy.append(await env.send(request, timeout=10))

                async with trio.open_nursery() as flooders:
                    for request in flood:
                        flooders.start_soon(flood_one, request)
                assert env.gate.entered == 1
                assert not env.gate.opened.is_set()
                assert len(busy) == 40
                assert {failure.code for failure in busy} == {ErrorCode.BUSY}
                assert all(failure.retry_after is not None and failure.retry_after > 0 for failure in busy)
                env.gate.opened.set()

            assert isinstance(answers[1], JobResult)
            assert answers[1].output == {"value": 1}
            assert isinstance(answers[2], JobResult)
            assert answers[2].queue_ms > 0
            assert env.metrics.job_errors.labels(code="busy")._value.get() == 40
            await env.good_job_works()
            assert env.server.load().free == 2

    trio.run(main)


def test_idle_streams_beyond_the_limit_get_busy_then_time_out(net: Net, tmp_path: Path) -> None:
    limits = JobLimits(max_concurrency=1, max_queue=1, max_streams=4, read_timeout=0.5, job_timeout=30)

    async def main() -> None:
        async with serving(net, tmp_path, limits=limits) as env:
            idle = [await env.client.host.new_stream(ID(env.node.peer_id), [JOB_PROTOCOL]) for _ in range(4)]
            while env.server.load().streams < 4:
                await trio.sleep(0.01)
            extra = await env.send(env.request(seeded(), payment=EscrowPayment()))
            assert extra.code is ErrorCode.BUSY
            for stream in idle:  # each idle stream is answered when its read timeout passes
                with trio.fail_after(5):
                    failure = decode_response(await read_frame(stream, 1 << 16))
                assert isinstance(failure, JobFailure)
                assert failure.code is ErrorCode.MALFORMED
                assert "within 0.5 s" in failure.message
                await stream.close()
            await env.good_job_works()

    trio.run(main)


def test_drain_finishes_admitted_jobs_and_refuses_new_ones(net: Net, tmp_path: Path) -> None:
    async def main() -> None:
        async with serving(net, tmp_path) as env:
            running = env.request({"value": 7}, "gate")
            answers: list[Any] = []

            async def send() -> None:
                answers.append(await env.send(running))

            async with trio.open_nursery() as nursery:
                nursery.start_soon(send)
                while env.gate.entered < 1:
                    await trio.sleep(0.01)
                drained: list[bool] = []

                async def drain() -> None:
                    drained.append(await env.server.drain(timeout=10))

                nursery.start_soon(drain)
                while not env.server.load().draining:
                    await trio.sleep(0.01)
                refused = await env.send(env.request(seeded(), payment=EscrowPayment()))
                assert refused.code is ErrorCode.UNAVAILABLE
                assert drained == []
                env.gate.opened.set()
            assert drained == [True]
            assert isinstance(answers[0], JobResult)

    trio.run(main)


def test_jobs_accepted_before_a_crash_are_run_again_at_start(net: Net, tmp_path: Path) -> None:
    async def main() -> None:
        with NodeStore(tmp_path / "node.db") as store:
            inp = seeded(16, 16, 16, seed=3)
            job = AcceptedJob(
                job_id=secrets.token_bytes(32),
                client=net.clients[0].address,
                workload="matmul",
                payment="voucher",
                price=UNIT_PRICE,
                spec_hash=MatmulWorkload().spec_hash(parse_input("matmul", inp)),
                input=canonical_json(inp),
                voucher_jobs=1,
            )
            store.accept_job(job)
            store.mark_running(job.job_id)
            async with serving(net, tmp_path, store=store) as env:
                with trio.fail_after(10):
                    while (stored := store.job(job.job_id)) is not None and stored.state is JobState.RUNNING:
                        await trio.sleep(0.01)
                assert stored is not None
                assert stored.state is JobState.COMPLETED
                assert stored.output is not None
                # The client's retry gets the result computed after the restart.
                retry = env.request(inp, job_id=job.job_id, payment=EscrowPayment())
                result = await env.run(retry)
                assert result.receipt.result_hash == stored.result_hash

    trio.run(main)


# --- client-side checks ----------------------------------------------------------------------------------


def test_client_checks_refuse_results_that_do_not_answer_the_request(net: Net, tmp_path: Path) -> None:
    async def main() -> None:
        async with serving(net, tmp_path) as env:
            request = env.request(seeded())
            result = await env.run(request)
            assert check_result(result, request, net.domains) == MatmulOutput.model_validate(result.output)
            zeros = {"c": Tensor.from_array(np.zeros((8, 8))).model_dump()}
            other_client = result.receipt.model_copy(update={"client": net.clients[1].address})
            flipped = result.signature[:-1] + bytes([55 - result.signature[-1]])  # v: 27 <-> 28
            for forged, problem in [
                (result.model_copy(update={"output": zeros}), "result hash is not the hash of the output"),
                (result.model_copy(update={"receipt": other_client}), "receipt names client"),
                (result.model_copy(update={"job_id": b"\x01" * 32}), "result is for job"),
                (result.model_copy(update={"signature": flipped}), "not signed by"),
            ]:
                with pytest.raises(InvalidReceiptError, match=problem):
                    check_result(forged, request, net.domains)
            # A quote is checked against the request it answers too.
            quote_request = QuoteRequest(client=net.clients[1].address, workload="matmul", input=seeded())
            with pytest.raises(ValueError, match="provider"):
                await run_job(env.client, env.client.peer_id, request, domains=net.domains)
            quote = await request_quote(env.client, env.node.peer_id, quote_request, domains=net.domains)
            assert quote.signer(net.domains.escrow_domain) == net.provider.address

    trio.run(main)


def test_quote_policy_must_fit_the_escrow_limits(net: Net) -> None:
    QuotePolicy(challenge_window=600).check(net.c.escrow, job_timeout=60)
    with pytest.raises(JobServerError, match="challenge_window"):
        QuotePolicy(challenge_window=10).check(net.c.escrow, job_timeout=60)
    with pytest.raises(JobServerError, match="maxJobDuration"):
        QuotePolicy().check(net.c.escrow, job_timeout=10 * 86_400)
    with pytest.raises(JobServerError, match="max_streams"):
        JobLimits(max_concurrency=4, max_queue=4, max_streams=8)
