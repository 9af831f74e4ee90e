"""libp2p peer ids of secp256k1 keys, and the Ethereum address of the same key.

A provider has one secp256k1 key: its Ethereum address is ``keccak(uncompressed pubkey)[12:]`` and its libp2p
peer id is the identity multihash of the protobuf-encoded compressed key (39 bytes, ``16Uiu2...`` in base58).
``ProviderRegistry.register`` checks on chain that the two belong together.
"""

from __future__ import annotations

from eth_keys.datatypes import PrivateKey, PublicKey
from eth_utils.address import to_checksum_address

from proxima.sdk.errors import SdkError
from proxima.sdk.types import Address

__all__ = ["InvalidPeerIdError", "address_of_peer_id", "peer_id_from_key", "peer_id_to_base58"]

_PREFIX = bytes([0x00, 0x25, 0x08, 0x02, 0x12, 0x21])
_ALPHABET = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"


class InvalidPeerIdError(SdkError, ValueError):
    """The bytes are not a secp256k1 libp2p peer id."""

    def __init__(self, peer_id: bytes, problem: str) -> None:
        super().__init__(f"invalid secp256k1 peer id 0x{peer_id.hex()}: {problem}")


def peer_id_from_key(private_key: bytes) -> bytes:
    """The binary libp2p peer id of a secp256k1 private key."""
    public = PrivateKey(private_key).public_key
    return _PREFIX + public.to_compressed_bytes()


def address_of_peer_id(peer_id: bytes) -> Address:
    """The Ethereum address of the key inside a binary peer id.

    Raises:
        InvalidPeerIdError: If the bytes are not a secp256k1 peer id with a valid curve point.
    """
    if len(peer_id) != 39 or not peer_id.startswith(_PREFIX):
        raise InvalidPeerIdError(peer_id, "expected 39 bytes starting with 0x002508021221")
    try:
        public = PublicKey.from_compressed_bytes(peer_id[6:])
    except Exception as err:  # eth-keys raises several types for bad points
        raise InvalidPeerIdError(peer_id, "the key is not a point on secp256k1") from err
    return to_checksum_address(public.to_checksum_address())


def peer_id_to_base58(peer_id: bytes) -> str:
    """The usual text form of a peer id (base58btc, ``16Uiu2...`` for secp256k1)."""
    number = int.from_bytes(peer_id, "big")
    text = ""
    while number:
        number, digit = divmod(number, 58)
        text = _ALPHABET[digit] + text
    leading = len(peer_id) - len(peer_id.lstrip(b"\x00"))
    return "1" * leading + text
