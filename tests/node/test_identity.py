"""Keystore files and the node identity: real scrypt keystores on disk (cheap scrypt cost in tests)."""

from __future__ import annotations

import json
import logging
import os
import pickle
import stat
from pathlib import Path

import pytest
from eth_account import Account
from eth_utils.address import to_checksum_address

from proxima.node.errors import KeystoreError
from proxima.node.identity import (
    DEFAULT_SCRYPT_N,
    KeystoreExistsError,
    KeystoreNotFoundError,
    NodeIdentity,
    UnsafeKeystorePermissionsError,
    WrongPassphraseError,
    create_keystore,
    load_keystore,
    read_passphrase,
)
from proxima.sdk.eip712 import Domain, Measurement, recover_signer
from proxima.sdk.peerid import address_of_peer_id

PASSPHRASE = "correct horse battery staple"
CHEAP = 2**12  # scrypt cost for tests; production keystores use DEFAULT_SCRYPT_N
KEY = bytes.fromhex("4c0883a69102937d6231471b5dbb6204fe5129617082792ae468d01a3f362318")


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_create_then_load_gives_the_same_identity(tmp_path: Path) -> None:
    path = tmp_path / "keystore.json"
    created = create_keystore(path, PASSPHRASE, scrypt_n=CHEAP)
    loaded = load_keystore(path, PASSPHRASE)
    assert loaded.address == created.address
    assert loaded.peer_id == created.peer_id
    assert loaded.private_key == created.private_key
    assert _mode(path) == 0o600


def test_address_and_peer_id_come_from_the_same_key(tmp_path: Path) -> None:
    identity = create_keystore(tmp_path / "k.json", PASSPHRASE, KEY, scrypt_n=CHEAP)
    assert identity.address == Account.from_key(KEY).address
    assert address_of_peer_id(identity.peer_id) == identity.address
    assert identity.peer_id_b58.startswith("16Uiu2")
    assert identity.private_key == KEY


def test_signer_signs_for_the_identity_address(tmp_path: Path) -> None:
    identity = create_keystore(tmp_path / "k.json", PASSPHRASE, scrypt_n=CHEAP)
    domain = Domain(
        "Proxima Attestations", "1", 31337, to_checksum_address("0x5FbDB2315678afecb367f032d93F642f64180aa3")
    )
    message = Measurement(benchmark_id=b"\x01" * 32, gemm_flops=10, mem_bandwidth=20)
    signed = message.sign(identity.signer, domain)
    assert recover_signer(message, domain, signed.signature) == identity.address


def test_keystore_is_a_standard_v3_scrypt_file(tmp_path: Path) -> None:
    path = tmp_path / "k.json"
    identity = create_keystore(path, PASSPHRASE, scrypt_n=CHEAP)
    raw = json.loads(path.read_text())
    assert raw["version"] == 3
    assert raw["crypto"]["kdf"] == "scrypt"
    assert raw["crypto"]["kdfparams"]["n"] == CHEAP
    assert bytes(Account.decrypt(raw, PASSPHRASE)) == identity.private_key  # any v3 reader opens it


def test_production_default_is_strong_scrypt(tmp_path: Path) -> None:
    path = tmp_path / "k.json"
    create_keystore(path, PASSPHRASE)
    params = json.loads(path.read_text())["crypto"]["kdfparams"]
    assert DEFAULT_SCRYPT_N == 2**18
    assert params["n"] == DEFAULT_SCRYPT_N


def test_loads_a_keystore_written_by_another_tool(tmp_path: Path) -> None:
    path = tmp_path / "geth-style.json"
    path.write_text(json.dumps(Account.encrypt(KEY, PASSPHRASE, kdf="pbkdf2", iterations=1000)))
    path.chmod(0o600)
    assert load_keystore(path, PASSPHRASE).address == Account.from_key(KEY).address


def test_refuses_to_overwrite_an_existing_keystore(tmp_path: Path) -> None:
    path = tmp_path / "k.json"
    create_keystore(path, PASSPHRASE, KEY, scrypt_n=CHEAP)
    before = path.read_bytes()
    with pytest.raises(KeystoreExistsError, match="refusing to overwrite"):
        create_keystore(path, "another passphrase", scrypt_n=CHEAP)
    assert path.read_bytes() == before
    assert load_keystore(path, PASSPHRASE).private_key == KEY


def test_leaves_no_temporary_file_and_creates_private_folders(tmp_path: Path) -> None:
    path = tmp_path / "new" / "dir" / "k.json"
    create_keystore(path, PASSPHRASE, scrypt_n=CHEAP)
    assert sorted(p.name for p in path.parent.iterdir()) == ["k.json"]
    assert _mode(path.parent) == 0o700


def test_mode_is_0600_whatever_the_umask(tmp_path: Path) -> None:
    old = os.umask(0o000)
    try:
        path = tmp_path / "k.json"
        create_keystore(path, PASSPHRASE, scrypt_n=CHEAP)
    finally:
        os.umask(old)
    assert _mode(path) == 0o600


def test_wrong_passphrase_is_reported_without_detail(tmp_path: Path) -> None:
    path = tmp_path / "k.json"
    create_keystore(path, PASSPHRASE, KEY, scrypt_n=CHEAP)
    with pytest.raises(WrongPassphraseError) as caught:
        load_keystore(path, "wrong")
    assert str(caught.value) == f"wrong passphrase for {path}"
    assert isinstance(caught.value, KeystoreError)


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660, 0o606])
def test_refuses_a_keystore_others_can_access(tmp_path: Path, mode: int) -> None:
    path = tmp_path / "k.json"
    create_keystore(path, PASSPHRASE, scrypt_n=CHEAP)
    path.chmod(mode)
    with pytest.raises(UnsafeKeystorePermissionsError) as caught:
        load_keystore(path, PASSPHRASE)
    assert f"chmod 600 {path}" in str(caught.value)
    assert f"{mode:04o}" in str(caught.value)
    path.chmod(0o600)
    load_keystore(path, PASSPHRASE)  # the advice works


def test_missing_keystore_says_how_to_create_one(tmp_path: Path) -> None:
    with pytest.raises(KeystoreNotFoundError, match="proxima-node init"):
        load_keystore(tmp_path / "absent.json", PASSPHRASE)


def test_a_folder_is_not_a_keystore(tmp_path: Path) -> None:
    folder = tmp_path / "k.json"
    folder.mkdir(mode=0o700)
    with pytest.raises(KeystoreError, match="not a regular file"):
        load_keystore(folder, PASSPHRASE)


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        ("{not json", "not JSON"),
        ("[1, 2]", "not a version 3 keystore"),
        ('{"version": 3}', "no crypto section"),
        ('{"version": 1, "crypto": {}}', "not a version 3 keystore"),
    ],
)
def test_malformed_files_are_refused(tmp_path: Path, content: str, problem: str) -> None:
    path = tmp_path / "k.json"
    path.write_text(content)
    path.chmod(0o600)
    with pytest.raises(KeystoreError, match=problem):
        load_keystore(path, PASSPHRASE)


def test_incomplete_crypto_section_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "k.json"
    create_keystore(path, PASSPHRASE, scrypt_n=CHEAP)
    raw = json.loads(path.read_text())
    del raw["crypto"]["ciphertext"]
    path.write_text(json.dumps(raw))
    with pytest.raises(KeystoreError, match="malformed"):
        load_keystore(path, PASSPHRASE)


def test_refuses_a_scrypt_cost_that_would_exhaust_memory(tmp_path: Path) -> None:
    path = tmp_path / "k.json"
    create_keystore(path, PASSPHRASE, scrypt_n=CHEAP)
    raw = json.loads(path.read_text())
    raw["crypto"]["kdfparams"]["n"] = 2**30
    path.write_text(json.dumps(raw))
    with pytest.raises(KeystoreError, match="beyond the supported"):
        load_keystore(path, PASSPHRASE)


def test_refuses_a_pbkdf2_cost_that_would_never_finish(tmp_path: Path) -> None:
    path = tmp_path / "k.json"
    raw = Account.encrypt(KEY, PASSPHRASE, kdf="pbkdf2", iterations=1000)
    raw["crypto"]["kdfparams"]["c"] = 10**12
    path.write_text(json.dumps(raw))
    path.chmod(0o600)
    with pytest.raises(KeystoreError, match="pbkdf2 c=1000000000000"):
        load_keystore(path, PASSPHRASE)


def test_detects_an_altered_address(tmp_path: Path) -> None:
    path = tmp_path / "k.json"
    create_keystore(path, PASSPHRASE, KEY, scrypt_n=CHEAP)
    raw = json.loads(path.read_text())
    raw["address"] = "00" * 20
    path.write_text(json.dumps(raw))
    with pytest.raises(KeystoreError, match="altered"):
        load_keystore(path, PASSPHRASE)


def test_refuses_an_empty_passphrase(tmp_path: Path) -> None:
    with pytest.raises(KeystoreError, match="empty passphrase"):
        create_keystore(tmp_path / "k.json", "", scrypt_n=CHEAP)
    assert not (tmp_path / "k.json").exists()


@pytest.mark.parametrize("key", [b"\x01" * 31, b"\x00" * 32, b"\xff" * 32])
def test_refuses_invalid_private_keys_without_showing_them(tmp_path: Path, key: bytes) -> None:
    with pytest.raises(KeystoreError) as caught:
        create_keystore(tmp_path / "k.json", PASSPHRASE, key, scrypt_n=CHEAP)
    assert key.hex() not in str(caught.value)


@pytest.mark.parametrize("n", [2**9, 3000, 2**23])
def test_refuses_unusable_scrypt_costs(tmp_path: Path, n: int) -> None:
    with pytest.raises(KeystoreError, match="scrypt_n"):
        create_keystore(tmp_path / "k.json", PASSPHRASE, scrypt_n=n)


def test_secrets_never_appear_in_text_logs_or_errors(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    path = tmp_path / "k.json"
    identity = create_keystore(path, PASSPHRASE, KEY, scrypt_n=CHEAP)
    loaded = load_keystore(path, PASSPHRASE)
    errors: list[BaseException] = []
    for attempt in ("wrong", PASSPHRASE + "x"):
        with pytest.raises(KeystoreError) as caught:
            load_keystore(path, attempt)
        errors.append(caught.value)
    path.chmod(0o644)
    with pytest.raises(KeystoreError) as caught:
        load_keystore(path, PASSPHRASE)
    errors.append(caught.value)

    secrets = [KEY.hex(), KEY.hex().upper(), "0x" + KEY.hex(), PASSPHRASE, str(KEY)]
    texts = [repr(identity), str(identity), repr(loaded), repr(identity.signer), f"{identity}"]
    for err in errors:
        chain: BaseException | None = err
        while chain is not None:
            texts += [str(chain), repr(chain)]
            chain = chain.__cause__ or chain.__context__
    for record in caplog.records:
        texts += [record.getMessage(), repr(record.__dict__)]
    assert caplog.records, "creating and unlocking a keystore is logged"
    for text in texts:
        for secret in secrets:
            assert secret not in text
    assert identity.address in repr(identity)


def test_identity_refuses_to_be_pickled(tmp_path: Path) -> None:
    identity = NodeIdentity.from_private_key(KEY)
    with pytest.raises(TypeError, match="private key"):
        pickle.dumps(identity)


def test_read_passphrase_prefers_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROXIMA_PASSPHRASE", "from env")

    def no_terminal(prompt: str) -> str:
        raise AssertionError("must not prompt")

    assert read_passphrase(confirm=True, prompt=no_terminal) == "from env"


def test_read_passphrase_refuses_an_empty_environment_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MY_PASS", "")
    with pytest.raises(KeystoreError, match=r"\$MY_PASS is set but empty"):
        read_passphrase("MY_PASS")


def test_read_passphrase_prompts_and_confirms(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PROXIMA_PASSPHRASE", raising=False)
    answers = iter(["secret", "secret"])
    prompts: list[str] = []

    def terminal(prompt: str) -> str:
        prompts.append(prompt)
        return next(answers)

    assert read_passphrase(confirm=True, prompt=terminal) == "secret"
    assert len(prompts) == 2


@pytest.mark.parametrize(("answers", "problem"), [(["a", "b"], "differ"), ([""], "must not be empty")])
def test_read_passphrase_refuses_bad_answers(
    monkeypatch: pytest.MonkeyPatch, answers: list[str], problem: str
) -> None:
    monkeypatch.delenv("PROXIMA_PASSPHRASE", raising=False)
    replies = iter(answers)
    with pytest.raises(KeystoreError, match=problem):
        read_passphrase(confirm=True, prompt=lambda _: next(replies))


def test_read_passphrase_without_terminal_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PROXIMA_PASSPHRASE", raising=False)

    def closed(prompt: str) -> str:
        raise EOFError

    with pytest.raises(KeystoreError, match=r"\$PROXIMA_PASSPHRASE is not set"):
        read_passphrase(prompt=closed)
