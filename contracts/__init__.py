"""Proxima contracts: Solidity sources, compiled artifacts and their loader."""
