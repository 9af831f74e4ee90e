"""The indexer against anvil over HTTP: a kill mid-sync, reorganisations, a range-limited provider, follow().

The range-limited provider is a real HTTP JSON-RPC proxy on 127.0.0.1 in front of anvil that answers
``eth_getLogs`` over more than ``limit`` blocks with the error public providers send ("query returned more
than 10000 results").
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import requests
from _indexer_support import Deployed, benchmark_id, chain_events, deploy, dump, indexed_events

from proxima.audit.indexer import Indexer, IndexerRangeError, connect
from proxima.audit.store import AuditStore
from proxima.sdk.chain import AnvilProcess, RpcChain

pytestmark = pytest.mark.anvil

REPO = Path(__file__).resolve().parents[2]


def full_index(d: Deployed, url: str) -> AuditStore:
    """A clean index of the whole chain, in one sync (what every other index must equal)."""
    store = AuditStore.memory()
    Indexer(connect(url), store, d.deployment).sync()
    return store


# --- kill mid-sync, resume -------------------------------------------------------------------------------

_SYNC_SCRIPT = textwrap.dedent(
    """
    import sys, time
    from proxima.audit.indexer import Indexer, connect
    from proxima.audit.store import AuditStore
    from proxima.sdk.chain import Deployment

    url, deployment_file, db = sys.argv[1:4]
    store = AuditStore(db)
    indexer = Indexer(connect(url), store, Deployment.load(deployment_file), initial_range=3, max_range=3)

    def progress(p):
        print(p.current, flush=True)
        time.sleep(0.03)

    indexer.sync(progress=progress)
    print("done", flush=True)
    """
)


def test_sync_killed_mid_way_resumes_without_duplicates_or_gaps(
    anvil_process: AnvilProcess, anvil_chain: RpcChain, tmp_path: Path
) -> None:
    d = deploy(anvil_chain)
    for i in range(30):
        d.attest(i % 2, 1 + i % 4, f"kill{i}", epoch=1 + i // 2)
    head = anvil_chain.block_number()
    deployment_file = d.deployment.save(tmp_path / "deployment.json")
    db = tmp_path / "audit.db"
    child = subprocess.Popen(
        [sys.executable, "-c", _SYNC_SCRIPT, anvil_process.url, str(deployment_file), str(db)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )
    assert child.stdout is not None
    committed = [int(child.stdout.readline()) for _ in range(4)]  # four ranges committed...
    os.kill(child.pid, signal.SIGKILL)  # ...and the fifth or a later one in flight
    child.wait(10)
    assert child.returncode == -signal.SIGKILL

    with AuditStore(db) as store:
        checkpoint = store.checkpoint()
        assert checkpoint is not None
        assert committed[-1] <= checkpoint.number < head  # killed before the end
        beyond = store._conn.execute(
            "SELECT COUNT(*) FROM events WHERE block_number > ?", (checkpoint.number,)
        ).fetchone()[0]
        assert beyond == 0  # no half-written range
        assert indexed_events(store) == chain_events(d, to_block=checkpoint.number)  # no gap so far

        resumed = Indexer(connect(anvil_process.url), store, d.deployment, initial_range=3).sync()
        assert resumed.from_block == checkpoint.number + 1
        assert dump(store) == dump(full_index(d, anvil_process.url))
        assert indexed_events(store) == chain_events(d)


# --- reorganisations -------------------------------------------------------------------------------------


def orphaned_ids(store: AuditStore, tag: str) -> list[bytes]:
    return [
        e.args["benchmarkId"]
        for e in store.events({"AttestationSubmitted"})
        if e.args["benchmarkId"] in {benchmark_id(tag, i) for i in range(8)}
    ]


def test_reorg_to_a_shorter_fork_rolls_back_the_orphaned_blocks(
    anvil_process: AnvilProcess, anvil_chain: RpcChain
) -> None:
    d = deploy(anvil_chain)
    d.attest(0, 2, "common")
    fork_point = anvil_chain.snapshot()
    orphan_txs = [d.attest(0, 3, "orphan")["transactionHash"], d.attest(1, 2, "orphan")["transactionHash"]]
    anvil_chain.mine()
    store = AuditStore.memory()
    indexer = Indexer(connect(anvil_process.url), store, d.deployment, initial_range=2)
    indexer.sync()
    assert len(orphaned_ids(store, "orphan")) == 5

    anvil_chain.revert(fork_point)  # the chain now ends below the stored checkpoint
    d.attest(1, 4, "new")
    result = indexer.sync()

    assert result.rolled_back == 5
    assert orphaned_ids(store, "orphan") == []
    assert all(store.transaction(bytes(h)) is None for h in orphan_txs)
    assert len(orphaned_ids(store, "new")) == 4
    assert indexed_events(store) == chain_events(d)
    assert dump(store) == dump(full_index(d, anvil_process.url))


def test_reorg_at_the_same_height_is_found_by_hash_and_rolled_back(
    anvil_process: AnvilProcess, anvil_chain: RpcChain
) -> None:
    d = deploy(anvil_chain)
    d.attest(0, 2, "kept")
    d.attest(1, 3, "orphan")
    d.attest(0, 1, "orphan", epoch=2)
    store = AuditStore.memory()
    indexer = Indexer(connect(anvil_process.url), store, d.deployment)
    indexer.sync()
    height = anvil_chain.block_number()
    assert store.checkpoint().number == height  # type: ignore[union-attr]

    # Replace the last two blocks with empty ones: same height, other hashes, the orphans' events gone.
    anvil_chain.w3.provider.make_request("anvil_reorg", [2, []])  # type: ignore[arg-type]
    assert anvil_chain.block_number() == height
    d.attest(1, 2, "after")
    result = indexer.sync()

    assert result.rolled_back == 4
    assert orphaned_ids(store, "orphan") == []
    assert len(orphaned_ids(store, "kept")) == 2
    assert len(orphaned_ids(store, "after")) == 2
    assert dump(store) == dump(full_index(d, anvil_process.url))


# --- a provider that limits eth_getLogs ranges -----------------------------------------------------------


class RangeLimitedProxy(ThreadingHTTPServer):
    """Forwards JSON-RPC to anvil; refuses ``eth_getLogs`` spanning more than ``limit`` blocks."""

    def __init__(self, upstream: str, limit: int, *, suggest: bool = False) -> None:
        super().__init__(("127.0.0.1", 0), _ProxyHandler)
        self.upstream = upstream
        self.limit = limit
        self.suggest = suggest  # name a range that would be accepted, as Alchemy-style providers do
        self.calls: list[tuple[int, bool]] = []  # (span, accepted) of each eth_getLogs
        self.session = requests.Session()

    @property
    def accepted(self) -> list[int]:
        return [span for span, ok in self.calls if ok]

    @property
    def refused(self) -> list[int]:
        return [span for span, ok in self.calls if not ok]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def answer(self, request: dict[str, Any]) -> dict[str, Any]:
        if request.get("method") == "eth_getLogs":
            params = request["params"][0]
            span = int(params["toBlock"], 16) - int(params["fromBlock"], 16) + 1
            self.calls.append((span, span <= self.limit))
            if span > self.limit:
                message = "query returned more than 10000 results"
                if self.suggest:
                    low = int(params["fromBlock"], 16)
                    message += f". Try with this block range [{hex(low)}, {hex(low + self.limit - 1)}]."
                return {"jsonrpc": "2.0", "id": request["id"], "error": {"code": -32005, "message": message}}
        answer: dict[str, Any] = self.session.post(self.upstream, json=request, timeout=10).json()
        return answer


class _ProxyHandler(BaseHTTPRequestHandler):
    server: RangeLimitedProxy

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        if isinstance(body, list):
            out: Any = [self.server.answer(r) for r in body]
        else:
            out = self.server.answer(body)
        data = json.dumps(out).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        pass


def serve_proxy(upstream: str, limit: int, *, suggest: bool = False) -> Iterator[RangeLimitedProxy]:
    proxy = RangeLimitedProxy(upstream, limit, suggest=suggest)
    thread = threading.Thread(target=proxy.serve_forever, daemon=True)
    thread.start()
    try:
        yield proxy
    finally:
        proxy.shutdown()
        proxy.server_close()
        thread.join(5)


@pytest.fixture
def limited(anvil_process: AnvilProcess) -> Iterator[RangeLimitedProxy]:
    yield from serve_proxy(anvil_process.url, limit=7)


def test_ranges_shrink_when_the_provider_refuses_and_grow_again(
    anvil_process: AnvilProcess, anvil_chain: RpcChain, limited: RangeLimitedProxy
) -> None:
    d = deploy(anvil_chain)
    for i in range(12):
        d.attest(i % 2, 2, f"r{i}", epoch=1 + i // 2)
    for _ in range(10):
        anvil_chain.mine()
    store = AuditStore.memory()
    indexer = Indexer(connect(limited.url), store, d.deployment, initial_range=1_000)
    result = indexer.sync()

    spans = [span for span, _ in limited.calls]
    first_ok = next(i for i, (_, ok) in enumerate(limited.calls) if ok)
    assert first_ok > 0  # the first ranges were too wide; each refusal halved the next try
    assert all(b == a // 2 for a, b in itertools.pairwise(spans[: first_ok + 1]))
    assert max(limited.accepted) == 7  # it grew back up to the provider's limit...
    assert len(limited.refused) - first_ok <= 3  # ...probing above it only a few times
    assert spans[-3:-1] == [7, 7]  # and then kept to it
    assert result.to_block == anvil_chain.block_number()
    assert sum(limited.accepted) == result.to_block - result.from_block + 1  # each block read once
    assert dump(store) == dump(full_index(d, anvil_process.url))


def test_a_range_the_provider_suggests_is_taken_at_once(
    anvil_process: AnvilProcess, anvil_chain: RpcChain
) -> None:
    d = deploy(anvil_chain)
    d.attest(0, 3, "s")
    anvil_chain.w3.provider.make_request("anvil_mine", [40])  # type: ignore[arg-type]
    for proxy in serve_proxy(anvil_process.url, limit=5, suggest=True):
        store = AuditStore.memory()
        Indexer(connect(proxy.url), store, d.deployment, initial_range=1_000).sync()
        assert proxy.calls[:2] == [
            (anvil_chain.block_number() - d.deployment.block_number + 1, False),
            (5, True),
        ]
        assert dump(store) == dump(full_index(d, anvil_process.url))


def test_a_provider_refusing_even_one_block_is_a_clear_error(
    anvil_process: AnvilProcess, anvil_chain: RpcChain
) -> None:
    d = deploy(anvil_chain)
    anvil_chain.w3.provider.make_request("anvil_mine", [100])  # type: ignore[arg-type]
    for proxy in serve_proxy(anvil_process.url, limit=0):
        store = AuditStore.memory()
        with pytest.raises(
            IndexerRangeError, match=rf"single block {d.deployment.block_number}: query returned"
        ):
            Indexer(connect(proxy.url), store, d.deployment, initial_range=64).sync()
        assert proxy.refused == [64, 32, 16, 8, 4, 2, 1]
        assert store.checkpoint() is None


# --- follow ----------------------------------------------------------------------------------------------


def test_follow_keeps_the_index_up_to_date_until_stopped(
    anvil_process: AnvilProcess, anvil_chain: RpcChain, tmp_path: Path
) -> None:
    d = deploy(anvil_chain)
    store = AuditStore(tmp_path / "audit.db")
    stop = threading.Event()
    indexer = Indexer(connect(anvil_process.url), store, d.deployment)
    follower = threading.Thread(target=indexer.follow, kwargs={"interval_s": 0.05, "stop": stop})
    follower.start()
    try:
        for i in range(3):
            d.attest(0, 2, f"f{i}", epoch=1 + i)
        deadline = time.monotonic() + 10
        reader = AuditStore(tmp_path / "audit.db", readonly=True)
        while indexed_events(reader) != chain_events(d) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert indexed_events(reader) == chain_events(d)
        assert len(orphaned_ids(reader, "f2")) == 2
    finally:
        stop.set()
        follower.join(5)
    assert not follower.is_alive()
