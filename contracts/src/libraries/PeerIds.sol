// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

/// @title Binding libp2p peer ids to Ethereum addresses
/// @notice A libp2p peer id of a secp256k1 key is the identity multihash of the protobuf-encoded compressed
/// public key: 0x00 0x25 | 0x08 0x02 0x12 0x21 | 33-byte compressed key (39 bytes). Decompressing the key and
/// hashing it gives the Ethereum address of the same key, so the registry can check that a provider registers
/// its own peer id.
library PeerIds {
    /// @dev Field prime of secp256k1.
    uint256 private constant _P = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEFFFFFC2F;
    /// @dev (P + 1) / 4: since P = 3 mod 4, a^((P+1)/4) is a square root of a when one exists.
    uint256 private constant _SQRT_EXP = 0x3FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFBFFFFF0C;
    uint256 private constant _PEER_ID_LENGTH = 39;
    /// @dev multihash identity (0x00), length 37 (0x25), protobuf KeyType=Secp256k1 (0x08 0x02),
    /// Data field with 33 bytes (0x12 0x21).
    bytes6 private constant _PREFIX = 0x002508021221;

    /// @notice The Ethereum address of the key inside `peerId`, or address(0) when `peerId` is not a valid
    /// secp256k1 peer id (wrong length, prefix, or a point that is not on the curve).
    function toAddress(bytes calldata peerId) internal view returns (address) {
        if (peerId.length != _PEER_ID_LENGTH || bytes6(peerId[0:6]) != _PREFIX) return address(0);
        uint8 parity = uint8(peerId[6]);
        if (parity != 2 && parity != 3) return address(0);
        uint256 x = uint256(bytes32(peerId[7:39]));
        if (x >= _P) return address(0);
        uint256 ySquared = addmod(mulmod(mulmod(x, x, _P), x, _P), 7, _P);
        (bool ok, uint256 y) = _modExp(ySquared, _SQRT_EXP, _P);
        if (!ok || mulmod(y, y, _P) != ySquared) return address(0);
        if (y & 1 != parity & 1) y = _P - y;
        return address(uint160(uint256(keccak256(abi.encodePacked(x, y)))));
    }

    /// @dev The modexp precompile (address 0x05).
    function _modExp(uint256 base, uint256 exponent, uint256 modulus) private view returns (bool, uint256) {
        (bool ok, bytes memory out) =
            address(0x05).staticcall(abi.encodePacked(uint256(32), uint256(32), uint256(32), base, exponent, modulus));
        if (!ok || out.length != 32) return (false, 0);
        return (true, abi.decode(out, (uint256)));
    }
}
