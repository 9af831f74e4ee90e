"""The provider's identity: one secp256k1 key in an encrypted keystore file.

The same key gives the node its Ethereum address (stake, payments, attestations) and its libp2p peer id
(offers, job streams); :class:`NodeIdentity` holds both. The key lives on disk only inside a version 3
keystore (scrypt + AES-128-CTR, the format geth and eth-account use), in a file only its owner can read.

The private key never appears in ``repr``/``str`` of anything here, in exception messages, or in logs.
"""

from __future__ import annotations

import contextlib
import getpass
import json
import logging
import os
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

from eth_account import Account
from eth_account.signers.local import LocalAccount
from eth_utils.address import to_checksum_address

from proxima.node.errors import KeystoreError
from proxima.sdk.eip712 import LocalSigner
from proxima.sdk.peerid import peer_id_from_key, peer_id_to_base58
from proxima.sdk.types import Address

__all__ = [
    "DEFAULT_SCRYPT_N",
    "PASSPHRASE_ENV",
    "KeystoreExistsError",
    "KeystoreNotFoundError",
    "NodeIdentity",
    "UnsafeKeystorePermissionsError",
    "WrongPassphraseError",
    "create_keystore",
    "load_keystore",
    "read_passphrase",
]

log = logging.getLogger(__name__)

PASSPHRASE_ENV = "PROXIMA_PASSPHRASE"  # noqa: S105 - a variable name, not a secret
"""Environment variable read by :func:`read_passphrase` before it prompts."""

DEFAULT_SCRYPT_N = 2**18
"""scrypt work factor of new keystores (geth's "standard" setting: ~0.5 s and 256 MiB to unlock)."""

_SECP256K1_N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
_MAX_KEYSTORE_BYTES = 64 * 1024
# A keystore may name any scrypt cost; refuse ones that would exhaust memory (2**22 * 128 * r bytes = 4 GiB).
_MAX_SCRYPT_N = 2**22
_MAX_SCRYPT_R = 8
_MAX_SCRYPT_P = 16
_MAX_PBKDF2_ROUNDS = 10_000_000


class KeystoreNotFoundError(KeystoreError):
    """There is no keystore file at the path.

    Args:
        path: Where the keystore was expected.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        super().__init__(f"no keystore at {path}; create one with `proxima-node init`")


class KeystoreExistsError(KeystoreError):
    """A keystore already exists where a new one was to be written.

    Args:
        path: The existing file.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        super().__init__(
            f"a keystore already exists at {path}; refusing to overwrite it "
            "(move it away first if you really want a new identity)"
        )


class UnsafeKeystorePermissionsError(KeystoreError):
    """The keystore file can be read or written by users other than its owner.

    Args:
        path: The keystore file.
        mode: Its permission bits.
    """

    def __init__(self, path: Path, mode: int) -> None:
        self.path = path
        self.mode = mode
        super().__init__(
            f"keystore {path} is accessible by group or others (mode {mode:04o}); "
            f"run `chmod 600 {path}` and try again"
        )


class WrongPassphraseError(KeystoreError):
    """The passphrase does not decrypt the keystore.

    Args:
        path: The keystore file.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        super().__init__(f"wrong passphrase for {path}")


class NodeIdentity:
    """A provider's key with the address and peer id derived from it.

    Args:
        account: The eth-account account holding the key.

    Attributes:
        address: The EIP-55 Ethereum address of the key.
        peer_id: The binary libp2p peer id of the same key (39 bytes).
        peer_id_b58: The peer id as text (``16Uiu2...``).
        account: The eth-account account (sends chain transactions).
        signer: An EIP-712 :class:`~proxima.sdk.eip712.LocalSigner` for offers, receipts and attestations.
    """

    __slots__ = ("account", "address", "peer_id", "peer_id_b58", "signer")

    def __init__(self, account: LocalAccount) -> None:
        self.account = account
        self.address: Address = to_checksum_address(account.address)
        self.peer_id = peer_id_from_key(bytes(account.key))
        self.peer_id_b58 = peer_id_to_base58(self.peer_id)
        self.signer = LocalSigner(account)

    @classmethod
    def from_private_key(cls, private_key: bytes) -> NodeIdentity:
        """The identity of a raw 32-byte secp256k1 private key.

        Raises:
            KeystoreError: If the bytes are not a valid private key (the key itself is not shown).
        """
        _check_private_key(private_key)
        return cls(Account.from_key(private_key))

    @property
    def private_key(self) -> bytes:
        """The raw 32-byte private key (for libp2p's host key); never log it."""
        return bytes(self.account.key)

    def __repr__(self) -> str:
        return f"NodeIdentity(address={self.address}, peer_id={self.peer_id_b58})"

    __str__ = __repr__

    def __reduce__(self) -> Any:
        # Pickling would write the key in clear wherever the bytes go (a queue, a cache, a crash dump).
        raise TypeError("NodeIdentity cannot be pickled: it holds a private key")


def create_keystore(
    path: Path,
    passphrase: str,
    private_key: bytes | None = None,
    *,
    scrypt_n: int = DEFAULT_SCRYPT_N,
) -> NodeIdentity:
    """Create an encrypted keystore file for a new (or the given) key.

    The file is written atomically with mode 0600 (a temporary file created 0600, then hard-linked into
    place, which fails rather than replaces if the path exists). Missing parent folders are created 0700.

    Args:
        path: Where to write the keystore; must not exist.
        passphrase: Encrypts the key; must not be empty.
        private_key: A 32-byte key to import; a fresh random key when omitted.
        scrypt_n: scrypt work factor (a power of two, at least 2**10); keep the default outside tests.

    Returns:
        The identity of the stored key.

    Raises:
        KeystoreExistsError: If ``path`` already exists.
        KeystoreError: If the passphrase is empty, the key or work factor is invalid, or the file cannot be
            written.
    """
    path = Path(path)
    if not passphrase:
        raise KeystoreError("refusing an empty passphrase: the keystore would not be protected")
    if scrypt_n < 2**10 or scrypt_n > _MAX_SCRYPT_N or scrypt_n & (scrypt_n - 1):
        raise KeystoreError(f"scrypt_n must be a power of two in [2**10, 2**22], got {scrypt_n}")
    if private_key is None:
        account: LocalAccount = Account.create()
    else:
        _check_private_key(private_key)
        account = Account.from_key(private_key)
    if path.exists():
        raise KeystoreExistsError(path)
    keystore = Account.encrypt(account.key, passphrase, kdf="scrypt", iterations=scrypt_n)
    data = (json.dumps(keystore, indent=2) + "\n").encode()
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        _write_new_private_file(path, data)
    except FileExistsError as err:
        raise KeystoreExistsError(path) from err
    except OSError as err:
        raise KeystoreError(f"cannot write keystore {path}: {err.strerror or err}") from err
    identity = NodeIdentity(account)
    log.info(
        "keystore created",
        extra={"path": str(path), "address": identity.address, "peer_id": identity.peer_id_b58},
    )
    return identity


def load_keystore(path: Path, passphrase: str) -> NodeIdentity:
    """Decrypt a keystore file.

    Args:
        path: A keystore written by :func:`create_keystore` (or any version 3 keystore).
        passphrase: Its passphrase.

    Returns:
        The identity of the stored key.

    Raises:
        KeystoreNotFoundError: If the file does not exist.
        UnsafeKeystorePermissionsError: If group or others may access it.
        WrongPassphraseError: If the passphrase does not decrypt it.
        KeystoreError: If it is not a regular file, not a valid keystore, or cannot be read.
    """
    path = Path(path)
    try:
        info = path.stat()
    except FileNotFoundError as err:
        raise KeystoreNotFoundError(path) from err
    except OSError as err:
        raise KeystoreError(f"cannot read keystore {path}: {err.strerror or err}") from err
    if not stat.S_ISREG(info.st_mode):
        raise KeystoreError(f"keystore {path} is not a regular file")
    mode = stat.S_IMODE(info.st_mode)
    if mode & 0o077:
        raise UnsafeKeystorePermissionsError(path, mode)
    if info.st_size > _MAX_KEYSTORE_BYTES:
        raise KeystoreError(f"keystore {path} is {info.st_size} bytes; a keystore is under 1 KiB")
    try:
        raw = json.loads(path.read_bytes())
    except OSError as err:
        raise KeystoreError(f"cannot read keystore {path}: {err.strerror or err}") from err
    except ValueError as err:  # JSONDecodeError and UnicodeDecodeError
        raise KeystoreError(f"keystore {path} is not JSON: {err}") from err
    _check_keystore_shape(path, raw)
    try:
        key = bytes(Account.decrypt(raw, passphrase))
    except ValueError as err:
        if "MAC mismatch" in str(err):
            raise WrongPassphraseError(path) from None  # the cause holds nothing useful, keep it out
        raise KeystoreError(f"keystore {path} cannot be decrypted: {err}") from err
    except (KeyError, TypeError) as err:
        raise KeystoreError(f"keystore {path} is malformed: {type(err).__name__} {err}") from err
    identity = NodeIdentity(Account.from_key(key))
    stored = raw.get("address")
    if isinstance(stored, str) and stored.lower().removeprefix("0x") != identity.address[2:].lower():
        raise KeystoreError(
            f"keystore {path} says address {stored} but its key belongs to {identity.address}; "
            "the file was altered"
        )
    log.info("keystore unlocked", extra={"path": str(path), "address": identity.address})
    return identity


def read_passphrase(
    env_var: str = PASSPHRASE_ENV,
    confirm: bool = False,
    *,
    prompt: Callable[[str], str] = getpass.getpass,
) -> str:
    """The keystore passphrase: from an environment variable if set, else asked on the terminal.

    Args:
        env_var: Environment variable to read first (for unattended starts).
        confirm: Ask twice and require both answers to match (when creating a keystore).
        prompt: Reads a line without echo; ``getpass.getpass`` unless a caller has its own terminal.

    Returns:
        The passphrase (never empty).

    Raises:
        KeystoreError: If the variable is set but empty, the answer is empty, or the two answers differ.
    """
    from_env = os.environ.get(env_var)
    if from_env is not None:
        if not from_env:
            raise KeystoreError(f"${env_var} is set but empty; unset it to be asked, or set a passphrase")
        log.debug("passphrase taken from the environment", extra={"env_var": env_var})
        return from_env
    try:
        passphrase = prompt("Keystore passphrase: ")
        if not passphrase:
            raise KeystoreError("the passphrase must not be empty")
        if confirm and prompt("Repeat the passphrase: ") != passphrase:
            raise KeystoreError("the two passphrases differ")
    except EOFError as err:
        raise KeystoreError(f"no passphrase: no terminal to ask on, and ${env_var} is not set") from err
    return passphrase


def _check_private_key(private_key: bytes) -> None:
    if not isinstance(private_key, bytes) or len(private_key) != 32:
        raise KeystoreError("a private key must be exactly 32 bytes")
    if not 0 < int.from_bytes(private_key, "big") < _SECP256K1_N:
        raise KeystoreError("the private key is outside the secp256k1 range")


def _check_keystore_shape(path: Path, raw: Any) -> None:
    """Refuse files that are not version 3 keystores, and scrypt costs that would exhaust memory."""
    if not isinstance(raw, dict) or raw.get("version") != 3:
        raise KeystoreError(f"keystore {path} is not a version 3 keystore")
    crypto = raw.get("crypto", raw.get("Crypto"))
    if not isinstance(crypto, dict):
        raise KeystoreError(f"keystore {path} has no crypto section")
    params = crypto.get("kdfparams")
    if crypto.get("kdf") == "pbkdf2" and isinstance(params, dict):
        rounds = params.get("c")
        if not isinstance(rounds, int) or not 0 < rounds <= _MAX_PBKDF2_ROUNDS:
            raise KeystoreError(f"keystore {path} asks for pbkdf2 c={rounds}, outside 1..10**7")
    if crypto.get("kdf") == "scrypt" and isinstance(params, dict):
        n, r, p = params.get("n"), params.get("r"), params.get("p")
        if not all(isinstance(v, int) and v > 0 for v in (n, r, p)):
            raise KeystoreError(f"keystore {path} has invalid scrypt parameters")
        if n > _MAX_SCRYPT_N or r > _MAX_SCRYPT_R or p > _MAX_SCRYPT_P:  # type: ignore[operator]
            raise KeystoreError(
                f"keystore {path} asks for scrypt n={n} r={r} p={p}, beyond the supported "
                f"n<=2**22, r<=8, p<=16"
            )


def _write_new_private_file(path: Path, data: bytes) -> None:
    """Write ``data`` to a new file ``path`` with mode 0600; raise FileExistsError if it exists."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o600)
    try:
        try:
            os.fchmod(fd, 0o600)  # the umask can only remove bits; make the mode exact anyway
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.link(tmp, path)  # atomic, and unlike rename it never replaces an existing file
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
    _fsync_dir(path.parent)


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
