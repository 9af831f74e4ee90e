"""``proxima-node``: init, stake, status, unbond, withdraw, attest and earnings against anvil.

Commands run in process through ``main([...])`` (fast: the modules are imported once) and, for the entry
point as a user starts it, as real subprocesses. Every run checks that no private key reaches stdout or
stderr and that errors come without a traceback.
"""

from __future__ import annotations

import io
import logging
import os
import pty
import re
import secrets
import select
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import base58
import pytest
from eth_account import Account
from eth_account.signers.local import LocalAccount

from proxima.node.benchmark import BenchmarkResult
from proxima.node.cli import main
from proxima.node.config import load_config
from proxima.node.identity import load_keystore
from proxima.node.service import NodeStatus
from proxima.node.store import AcceptedJob, NodeStore
from proxima.sdk.bindings import ProximaContracts
from proxima.sdk.chain import AnvilProcess, RpcChain, dev_accounts
from proxima.sdk.deploy import deploy_all
from proxima.sdk.eip712 import LocalSigner, Voucher
from proxima.sdk.peerid import address_of_peer_id, peer_id_from_key, peer_id_to_base58

pytestmark = pytest.mark.anvil

ETH = 10**18
PASSPHRASE = "cli test passphrase"
SECRET_KEYS: set[str] = set()
"""Hex of every private key a test hands to the CLI; none may appear in its output."""


@dataclass
class Devnet:
    anvil: AnvilProcess
    chain: RpcChain
    contracts: ProximaContracts
    deployment_path: Path


@dataclass
class Run:
    code: int
    out: str
    err: str

    def rows(self) -> dict[str, str]:
        """The name -> value rows of the table printed on stdout."""
        found: dict[str, str] = {}
        for line in self.out.splitlines():
            cells = [c.strip() for c in line.split("│")]
            if len(cells) == 4 and cells[1]:
                found[cells[1]] = cells[2]
        return found


@pytest.fixture(scope="module")
def devnet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Devnet]:
    root = tmp_path_factory.mktemp("cli-devnet")
    with AnvilProcess() as anvil, anvil.connect() as chain:
        deployment = deploy_all(chain, chain.accounts[0]).model_copy(update={"rpc_url": anvil.url})
        path = deployment.save(root / "deployment.json")
        yield Devnet(anvil, chain, ProximaContracts.from_deployment(chain, deployment), path)


@pytest.fixture
def net(devnet: Devnet) -> Iterator[Devnet]:
    """The module's devnet, reverted to its deployed state after the test."""
    snapshot = devnet.chain.snapshot()
    try:
        yield devnet
    finally:
        devnet.chain.revert(snapshot)


@pytest.fixture(autouse=True)
def _environment(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The passphrase in the environment, and the root logger as it was (main() installs a handler)."""
    monkeypatch.setenv("PROXIMA_PASSPHRASE", PASSPHRASE)
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def _check_output(out: str, err: str) -> None:
    for key in SECRET_KEYS:
        assert key.lower() not in (out + err).lower(), "a private key was printed"
    assert "Traceback" not in err


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> Run:
    """``proxima-node ARGS`` in this process."""
    try:
        code = main(list(args))
    except SystemExit as exit_:  # argparse's usage errors
        code = int(exit_.code or 0)
    captured = capsys.readouterr()
    _check_output(captured.out, captured.err)
    return Run(code, captured.out, captured.err)


def init(capsys: pytest.CaptureFixture[str], data_dir: Path, net: Devnet, *extra: str) -> Run:
    done = cli(
        capsys,
        "init",
        "--data-dir", str(data_dir),
        "--chain-url", net.anvil.url,
        "--deployment", str(net.deployment_path),
        *extra,
    )  # fmt: skip
    assert done.code == 0, done.err
    return done


def import_key(monkeypatch: pytest.MonkeyPatch, account: LocalAccount, var: str = "NODE_KEY") -> list[str]:
    key = bytes(account.key).hex()
    SECRET_KEYS.add(key)
    monkeypatch.setenv(var, "0x" + key)
    return ["--import-key-env", var]


def funded(index: int) -> LocalAccount:
    account = dev_accounts(10)[index]
    SECRET_KEYS.add(bytes(account.key).hex())
    return account


# --- init ------------------------------------------------------------------------------------------------


def test_init_printsAddressAndPeerIdOfOneKey_andWritesAnEncryptedKeystoreAndTheConfig(
    tmp_path: Path, net: Devnet, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    key = secrets.token_bytes(32)
    SECRET_KEYS.add(key.hex())
    monkeypatch.setenv("NEW_KEY", key.hex())
    other_peer = peer_id_to_base58(peer_id_from_key(b"\x07" * 32))
    bootstrap = f"/ip4/127.0.0.1/tcp/4001/p2p/{other_peer}"
    data_dir = tmp_path / "node"
    done = init(
        capsys,
        data_dir,
        net,
        "--region", "eu-west",
        "--country", "DE",
        "--lat", "52.52",
        "--lon", "13.405",
        "--workloads", "matmul",
        "--price", "matmul=2000gwei",
        "--listen", "/ip4/127.0.0.1/tcp/4555",
        "--listen", "/ip4/0.0.0.0/tcp/4556",
        "--bootstrap", bootstrap,
        "--announce", "/ip4/203.0.113.9/tcp/4555",
        "--stake", "2.5",
        "--max-concurrency", "3",
        "--metrics-port", "9109",
        "--import-key-env", "NEW_KEY",
    )  # fmt: skip

    address = re.search(r"^address\s+(0x[0-9a-fA-F]{40})$", done.out, re.M)
    peer_id = re.search(r"^peer id\s+(16Uiu2\w+)$", done.out, re.M)
    assert address is not None, done.out
    assert peer_id is not None, done.out
    assert address_of_peer_id(base58.b58decode(peer_id.group(1))) == address.group(1)
    assert address.group(1) == Account.from_key(key).address

    keystore = data_dir / "keystore.json"
    assert stat.S_IMODE(keystore.stat().st_mode) == 0o600
    text = keystore.read_text()
    assert key.hex() not in text.lower()
    assert "ciphertext" in text
    assert load_keystore(keystore, PASSPHRASE).private_key == key

    config = load_config(data_dir / "node.toml")
    assert config.region == "eu-west"
    assert config.country == "DE"
    assert config.location is not None
    assert (config.location.lat, config.location.lon) == (52.52, 13.405)
    assert config.workloads == ["matmul"]
    assert config.prices == {"matmul": 2000 * 10**9}
    assert config.p2p.listen == ["/ip4/127.0.0.1/tcp/4555", "/ip4/0.0.0.0/tcp/4556"]
    assert config.p2p.bootstrap == [bootstrap]
    assert config.p2p.announce == ["/ip4/203.0.113.9/tcp/4555"]
    assert config.chain.url == net.anvil.url
    assert config.chain.deployment == net.deployment_path
    assert config.chain.stake_wei == 25 * ETH // 10
    assert config.capacity.max_concurrency == 3
    assert config.metrics.port == 9109
    assert config.keystore_path == keystore
    assert config.data_dir == data_dir
    assert key.hex() not in (data_dir / "node.toml").read_text().lower()


def test_init_onAnInitialisedFolder_refusesAndLeavesTheFilesAlone(
    tmp_path: Path, net: Devnet, capsys: pytest.CaptureFixture[str]
) -> None:
    init(capsys, tmp_path, net)
    config, keystore = tmp_path / "node.toml", tmp_path / "keystore.json"
    before = config.read_bytes(), keystore.read_bytes()

    again = cli(capsys, "init", "--data-dir", str(tmp_path), "--region", "us-east")
    assert again.code == 1
    assert str(config) in again.err
    assert "exists already" in again.err

    config.unlink()  # a keystore without its config: still never overwritten
    again = cli(capsys, "init", "--data-dir", str(tmp_path))
    assert again.code == 1
    assert str(keystore) in again.err
    assert "refusing to overwrite" in again.err
    assert keystore.read_bytes() == before[1]
    assert not config.exists()


@pytest.mark.parametrize(
    ("options", "code", "message"),
    [
        (["--country", "de"], 1, "--country: 'de' is not an ISO 3166-1 alpha-2 country code (uppercase)"),
        (["--country", "XX"], 1, "--country: 'XX' is not an ISO 3166-1"),
        (["--region", "EU West"], 1, "--region: 'EU West' must be lowercase"),
        (["--price", "matmul"], 2, "use WORKLOAD=WEI_PER_UNIT"),
        (["--price", "matmul=cheap"], 2, "'matmul=cheap': the price 'cheap' is not an amount"),
        (["--price", "matmul=1.5"], 2, "is not a whole number of wei"),
        (["--price", "matmul=-3"], 2, "is not an amount"),
        (["--workloads", "matmul,teleport"], 1, "--workloads: 'teleport' not installed; installed workloads"),
        (["--workloads", " , "], 1, "--workloads: name at least one workload"),
        (["--workloads", "matmul", "--price", "embed=5"], 1, "--price: embed priced but not served"),
        (["--listen", "/ip4/1.2.3/tcp/1"], 1, "--listen: '/ip4/1.2.3/tcp/1' is not a multiaddr"),
        (["--listen", "tcp://127.0.0.1:4001"], 1, "--listen: 'tcp://127.0.0.1:4001' is not a multiaddr"),
        (
            ["--bootstrap", "/ip4/127.0.0.1/tcp/4001"],
            1,
            "--bootstrap: '/ip4/127.0.0.1/tcp/4001' must end in /p2p/",
        ),
        (["--announce", "/ip4/1.2.3/tcp/1"], 1, "--announce: '/ip4/1.2.3/tcp/1' is not a multiaddr"),
        (["--lat", "52.5"], 1, "--lat/--lon: give both the latitude and the longitude"),
        (["--lon", "13.4"], 1, "--lat/--lon: give both"),
        (["--lat", "95", "--lon", "0"], 1, "--lat: Input should be less than or equal to 90"),
        (["--lat", "0", "--lon", "nan"], 1, "--lon:"),
        (["--lat", "north", "--lon", "0"], 2, "argument --lat: invalid float value"),
        (["--chain-url", "localhost:8545"], 1, "--chain-url: 'localhost:8545' is not an http(s)://"),
        (["--stake", "0"], 2, "argument --stake: '0': the amount must be more than zero"),
        (["--stake", "1.5 bitcoin"], 2, "unknown unit 'bitcoin'"),
        (["--max-concurrency", "0"], 1, "--max-concurrency: Input should be greater than or equal to 1"),
        (["--metrics-port", "70000"], 1, "--metrics-port: Input should be less than or equal to 65535"),
        (["--device", "tpu"], 2, "argument --device: invalid choice: 'tpu'"),
        (["--import-key-env", "PROXIMA_TEST_UNSET"], 1, "--import-key-env: $PROXIMA_TEST_UNSET is not set"),
        (["--import-key-env", "BAD_KEY"], 1, "--import-key-env: $BAD_KEY must hold a 32-byte"),
        (["--import-key-env", "NOT_HEX"], 1, "--import-key-env: $NOT_HEX does not hold a hex private key"),
    ],
)
def test_init_withABadOption_namesItAndWritesNothing(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    options: list[str],
    code: int,
    message: str,
) -> None:
    monkeypatch.delenv("PROXIMA_TEST_UNSET", raising=False)
    monkeypatch.setenv("BAD_KEY", "0x1234")
    monkeypatch.setenv("NOT_HEX", "this is not hex")
    done = cli(capsys, "init", "--data-dir", str(tmp_path / "node"), *options)
    assert done.code == code
    assert message in done.err
    assert not (tmp_path / "node").exists()


def test_init_withoutAPassphraseOrATerminal_saysHowToGiveOne(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("PROXIMA_PASSPHRASE")
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))
    done = cli(capsys, "init", "--data-dir", str(tmp_path))
    assert done.code == 1
    assert "no passphrase: $PROXIMA_PASSPHRASE is not set and there is no terminal" in done.err
    monkeypatch.setenv("PROXIMA_PASSPHRASE", "")
    done = cli(capsys, "init", "--data-dir", str(tmp_path))
    assert done.code == 1
    assert "$PROXIMA_PASSPHRASE is set but empty" in done.err
    assert not (tmp_path / "keystore.json").exists()
    assert not (tmp_path / "node.toml").exists()


# --- chain commands --------------------------------------------------------------------------------------


def test_stake_status_unbond_withdraw_onAnvil(
    tmp_path: Path, net: Devnet, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    account = funded(3)
    init(capsys, tmp_path, net, "--region", "eu-west", "--country", "DE", *import_key(monkeypatch, account))
    registry, folder = net.contracts.registry, ["--data-dir", str(tmp_path)]

    status = cli(capsys, "status", *folder)
    assert status.code == 0
    rows = status.rows()
    assert rows["address"] == account.address
    assert rows["node"] == "not running"
    assert rows["region"] == "eu-west (DE)"
    assert rows["registered"].startswith("no (run `proxima-node stake")

    below = cli(capsys, "stake", "0.5", *folder)
    assert below.code == 1
    assert "registering needs a stake of at least 1 ETH, not 0.5 ETH; run `proxima-node stake 1`" in below.err
    assert registry.account_of(account.address).stake == 0

    staked = cli(capsys, "stake", "1", *folder)
    assert staked.code == 0, staked.err
    assert staked.rows()["stake"] == "1 ETH"
    assert staked.rows()["registered"] == "yes, active"
    assert registry.account_of(account.address).stake == ETH
    topped = cli(capsys, "stake", "500000000gwei", *folder)
    assert topped.code == 0
    assert topped.rows()["stake"] == "1.5 ETH"
    assert registry.account_of(account.address).stake == 3 * ETH // 2

    rows = cli(capsys, "status", *folder).rows()
    assert rows["registered"] == "yes, active"
    assert rows["stake"] == "1.5 ETH"
    assert rows["unbonding"] == "0 ETH"
    assert rows["jobs completed / failed"] == "0 / 0"
    assert rows["node"] == "not running"
    assert rows["attested"].startswith("not yet")

    too_much = cli(capsys, "unbond", "2", *folder)
    assert too_much.code == 1
    assert "unbond: asked to unbond 2 ETH but the stake is 1.5 ETH" in too_much.err
    nothing = cli(capsys, "withdraw", *folder)
    assert nothing.code == 1
    assert "withdraw: no stake is unbonding; start with `proxima-node unbond" in nothing.err

    unbonded = cli(capsys, "unbond", "0.5", *folder)
    assert unbonded.code == 0, unbonded.err
    record = registry.account_of(account.address)
    assert (record.stake, record.unbonding) == (ETH, ETH // 2)
    ready = datetime.fromtimestamp(record.unbond_ready_at, tz=UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    assert unbonded.rows()["unbonding"] == "0.5 ETH"
    assert unbonded.rows()["withdrawable from"].startswith(f"{ready} (in ")

    early = cli(capsys, "withdraw", *folder)
    assert early.code == 1
    assert f"the unbonding stake can be withdrawn from {ready} (chain time)" in early.err
    assert "run `proxima-node withdraw` again then" in early.err
    assert registry.account_of(account.address).unbonding == ETH // 2

    balance = net.chain.balance(account.address)
    net.chain.advance_time(registry.unbonding_delay())
    late = cli(capsys, "withdraw", *folder)
    assert late.code == 0, late.err
    assert late.rows()["withdrawn"] == "0.5 ETH"
    assert late.rows()["stake"] == "1 ETH"
    gained = net.chain.balance(account.address) - balance
    assert ETH // 2 - 10**15 < gained < ETH // 2  # the stake back, less the gas of one transaction
    assert registry.account_of(account.address).unbonding == 0

    # A node running on this folder (its status file, written by the node's own format) shows up.
    (tmp_path / "status.json").write_text(
        NodeStatus(
            pid=os.getpid(),
            address=account.address,
            peer_id=peer_id_to_base58(peer_id_from_key(bytes(account.key))),
            addrs=("/ip4/127.0.0.1/tcp/4001",),
            metrics_url=None,
            region="eu-west",
            device="cpu",
            started_at=0.0,
        ).to_json()
    )
    rows = cli(capsys, "status", *folder).rows()
    assert rows["node"] == f"running (pid {os.getpid()}, device cpu)"
    assert rows["listening"] == "/ip4/127.0.0.1/tcp/4001"
    assert rows["unbonding"] == "0 ETH"


def test_attest_quick_putsTheMeasuredFiguresOnChain(
    tmp_path: Path, net: Devnet, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    account = funded(4)
    init(capsys, tmp_path, net, *import_key(monkeypatch, account))
    folder = ["--data-dir", str(tmp_path)]

    refused = cli(capsys, "attest", "--quick", *folder)
    assert refused.code == 1
    assert f"{account.address} is not an active provider (stake 0 ETH, minimum 1 ETH)" in refused.err
    assert cli(capsys, "stake", "1", *folder).code == 0

    attested = cli(capsys, "attest", "--quick", *folder)
    assert attested.code == 0, attested.err
    figures = net.contracts.attestations.latest_figures(account.address)
    measured = BenchmarkResult.load(tmp_path / "benchmark.json")
    assert (figures.gemm_flops, figures.mem_bandwidth) == (measured.gemm_flops, measured.mem_bandwidth)
    assert figures.gemm_flops > 0
    assert attested.rows()["epoch"] == str(figures.epoch)
    assert attested.rows()["transaction"].startswith("0x")
    assert len(attested.rows()["transaction"]) == 66
    status = cli(capsys, "status", *folder).rows()
    assert status["attested"].startswith(f"{figures.gemm_flops / 1e9:.1f} GFLOP/s")


def test_earnings_withoutJobs_thenTheSumsOfTheStore(
    tmp_path: Path, net: Devnet, capsys: pytest.CaptureFixture[str]
) -> None:
    init(capsys, tmp_path, net)
    folder = ["--data-dir", str(tmp_path)]
    fresh = cli(capsys, "earnings", *folder)
    assert fresh.code == 0
    assert "no jobs yet" in fresh.out

    client = Account.from_key(b"\x05" * 32)
    config = load_config(tmp_path / "node.toml")
    with NodeStore(config.store_path) as store:
        assert cli(capsys, "earnings", *folder).out.strip() == "no jobs yet"

        def escrow(price: int) -> bytes:
            job = AcceptedJob(
                job_id=secrets.token_bytes(32),
                client=client.address,
                workload="matmul",
                payment="escrow",
                price=price,
                spec_hash=b"\x5e" * 32,
                input=b'{"seed":1,"m":2,"k":2,"n":2,"dtype":"float32"}',
                delivery_deadline=2_000_000_000,
            )
            store.accept_job(job)
            return job.job_id

        settled, committed, failed = escrow(3 * 10**15), escrow(2 * 10**15), escrow(7)
        escrow(10**15)  # accepted, not run yet
        for job_id in (settled, committed):
            store.complete_job(job_id, b"\x77" * 32, b"\x01" * 64 + b"\x1b")
            store.mark_committed(job_id, b"\xaa" * 32, challenge_ends_at=1_900_000_000)
        store.mark_settled(settled, b"\xbb" * 32)
        store.fail_job(failed, "the input did not parse")
        provider = Account.from_key(b"\x06" * 32).address
        voucher = Voucher(
            client=client.address, provider=provider, cumulative_amount=5 * 10**14, cumulative_jobs=1
        ).sign(LocalSigner(client), net.contracts.vouchers.domain)
        store.record_voucher(voucher, previous_jobs=0)

    rows = cli(capsys, "earnings", *folder).rows()
    assert rows["paid"] == "0.003 ETH"
    assert rows["escrow settled"] == "0.003 ETH"
    assert rows["escrow committed, in challenge window"] == "0.002 ETH"
    assert rows["escrow accepted, not committed"] == "0.001 ETH"
    assert rows["vouchers accepted"] == "0.0005 ETH"
    assert rows["vouchers not redeemed yet"] == "0.0005 ETH"
    assert rows["vouchers redeemed"] == "0 ETH"
    assert rows["jobs"] == "accepted 1, failed 1, committed 1, settled 1"


# --- errors ----------------------------------------------------------------------------------------------


def test_stake_withAnUnfundedKey_saysHowToFundIt(
    tmp_path: Path, net: Devnet, capsys: pytest.CaptureFixture[str]
) -> None:
    address = re.search(r"^address\s+(\S+)$", init(capsys, tmp_path, net).out, re.M)
    assert address is not None
    done = cli(capsys, "stake", "1", "--data-dir", str(tmp_path))
    assert done.code == 1
    assert (
        f"account {address.group(1)} holds 0 wei but staking needs {ETH} wei plus gas; send it ETH"
        in done.err
    )
    assert net.contracts.registry.account_of(address.group(1)).stake == 0


def test_aWrongPassphrase_isNamed(
    tmp_path: Path, net: Devnet, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    init(capsys, tmp_path, net, *import_key(monkeypatch, funded(5)))
    monkeypatch.setenv("PROXIMA_PASSPHRASE", "not the passphrase")
    done = cli(capsys, "stake", "1", "--data-dir", str(tmp_path))
    assert done.code == 1
    assert f"wrong passphrase for {tmp_path / 'keystore.json'}; check $PROXIMA_PASSPHRASE" in done.err
    assert net.contracts.registry.account_of(funded(5).address).stake == 0


def test_commands_withoutAConfig_sayToRunInit(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for command in (["status"], ["stake", "1"], ["withdraw"], ["earnings"]):
        done = cli(capsys, *command, "--data-dir", str(tmp_path))
        assert done.code == 1
        assert f"no config at {tmp_path / 'node.toml'}; create one with `proxima-node init" in done.err


def test_stake_withNoChainAnswering_saysWhatToStart(
    tmp_path: Path, net: Devnet, capsys: pytest.CaptureFixture[str]
) -> None:
    init(capsys, tmp_path, net)
    config = tmp_path / "node.toml"
    config.write_text(config.read_text().replace(net.anvil.url, "http://127.0.0.1:9"))
    done = cli(capsys, "stake", "1", "--data-dir", str(tmp_path))
    assert done.code == 1
    assert "no JSON-RPC node answers at http://127.0.0.1:9" in done.err
    assert "start one" in done.err
    status = cli(capsys, "status", "--data-dir", str(tmp_path))
    assert status.code == 0
    assert status.rows()["chain"].startswith("unreachable: no JSON-RPC node answers")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        ([], "the following arguments are required: COMMAND"),
        (["launch"], "invalid choice: 'launch'"),
        (["stake"], "the following arguments are required: amount"),
        (["stake", "-1"], "'-1' is not an amount"),
        (["stake", "lots"], "'lots' is not an amount; write 1.5 (ETH), 20gwei or 1500wei"),
        (["stake", "inf"], "'inf' is not an amount"),
        (["unbond", "1.5wei"], "'1.5wei' is not a whole number of wei"),
        (["unbond", "0.0000000000000000001"], "is not a whole number of wei"),
        (["unbond", "0eth"], "the amount must be more than zero"),
        (["withdraw", "1"], "unrecognized arguments: 1"),
    ],
)
def test_badUsage_exitsWith2(capsys: pytest.CaptureFixture[str], argv: list[str], message: str) -> None:
    done = cli(capsys, *argv)
    assert done.code == 2
    assert message in done.err


# --- as a user starts it ---------------------------------------------------------------------------------


def test_entryPoint_asASubprocess(tmp_path: Path, net: Devnet) -> None:
    account = funded(6)
    key = bytes(account.key).hex()
    env = {k: v for k, v in os.environ.items() if k != "PROXIMA_PASSPHRASE"}
    env["NODE_KEY"] = key
    init_args = [
        sys.executable, "-m", "proxima.node.cli", "init",
        "--data-dir", str(tmp_path),
        "--chain-url", net.anvil.url,
        "--deployment", str(net.deployment_path),
        "--import-key-env", "NODE_KEY",
    ]  # fmt: skip

    def run(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            args,
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
            start_new_session=True,  # no controlling terminal: nothing to prompt on
        )
        _check_output(done.stdout, done.stderr)
        return done

    no_passphrase = run(init_args, env)
    assert no_passphrase.returncode == 1
    assert "proxima-node: error: no passphrase: $PROXIMA_PASSPHRASE is not set" in no_passphrase.stderr
    assert not (tmp_path / "keystore.json").exists()

    done = run(init_args, {**env, "PROXIMA_PASSPHRASE": PASSPHRASE})
    assert done.returncode == 0, done.stderr
    assert f"address   {account.address}" in done.stdout
    staked = run(
        [sys.executable, "-m", "proxima.node.cli", "stake", "1", "--data-dir", str(tmp_path)],
        {**env, "PROXIMA_PASSPHRASE": PASSPHRASE},
    )
    assert staked.returncode == 0, staked.stderr
    assert net.contracts.registry.account_of(account.address).stake == ETH


def _read_until(fd: int, text: bytes, timeout: float = 30.0) -> bytes:
    seen = b""
    deadline = time.monotonic() + timeout
    while text not in seen:
        left = deadline - time.monotonic()
        ready, _, _ = select.select([fd], [], [], max(left, 0))
        if not ready:
            pytest.fail(f"no {text!r} on the terminal within {timeout} s; saw {seen!r}")
        try:
            chunk = os.read(fd, 4096)
        except OSError:  # EIO: the other side closed
            chunk = b""
        if not chunk:
            pytest.fail(f"the terminal closed before {text!r}; saw {seen!r}")
        seen += chunk
    return seen


def test_init_onATerminal_asksForThePassphraseTwice(tmp_path: Path, net: Devnet) -> None:
    env = {k: v for k, v in os.environ.items() if k != "PROXIMA_PASSPHRASE"}
    # A new session whose controlling terminal is the pty, as a login shell has: getpass reads /dev/tty.
    with_terminal = (
        "import fcntl, os, sys, termios; fcntl.ioctl(0, termios.TIOCSCTTY, 0); "
        "os.execv(sys.executable, [sys.executable, '-m', 'proxima.node.cli', *sys.argv[1:]])"
    )
    master, slave = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-c", with_terminal, "init", "--data-dir", str(tmp_path),
         "--deployment", str(net.deployment_path)],
        stdin=slave,
        stdout=slave,
        stderr=slave,
        env=env,
        start_new_session=True,
    )  # fmt: skip
    os.close(slave)
    try:
        _read_until(master, b"Keystore passphrase: ")
        os.write(master, b"typed on the terminal\n")
        _read_until(master, b"Repeat the passphrase: ")
        os.write(master, b"typed on the terminal\n")
        shown = _read_until(master, b"next: fund")
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)
    assert b"typed on the terminal" not in shown  # not echoed
    identity = load_keystore(tmp_path / "keystore.json", "typed on the terminal")
    assert f"address   {identity.address}".encode() in shown
