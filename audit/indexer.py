"""Follow the Proxima contracts' events from the deployment block into an audit index (``AuditStore``).

The indexer trusts only what a JSON-RPC endpoint returns: logs, block headers and transactions.
It works against anything web3 connects to (anvil, a production node, py-evm in process).

How a sync goes (:meth:`Indexer.sync`):

1. The store is bound to the deployment and the endpoint's chain id (another deployment's index is refused).
2. **Reorg check.** The stored checkpoint's hash is compared with the chain's block at that height. On a
   mismatch (or a chain that no longer reaches that height), the highest stored block the chain still has
   (binary search over the stored headers: blocks with events and every range's last block) is the common
   ancestor; everything above it is rolled back (logged as ``audit reorg rolled back``) and re-indexed.
3. **Ranges.** From the block after the checkpoint to ``head - confirmations``, in ranges: one
   ``eth_getLogs`` over all the deployment's addresses, then the headers of the blocks with events and of
   the range's first and last blocks, then each new transaction (JSON-RPC batch requests where the
   provider takes them, one call each otherwise; no receipts: only successful transactions leave logs, so
   every indexed transaction's status is 1). A range is checked before it is written: every
   log's block hash must equal the header fetched for its block, the range's first block must be the child
   of the stored checkpoint, and the last block's hash must be the same before and after its logs were
   read; otherwise the chain moved under the sync, and step 2 runs again.
4. **Commit.** Each range is written with :meth:`AuditStore.write_range` in one SQL transaction together
   with the new checkpoint, so a process killed mid-sync resumes from the last committed range without
   duplicates or gaps, and re-running a sync changes nothing.

**Adaptive ranges.** The range starts at ``initial_range`` blocks and doubles after each range that returned
fewer than ``max_logs`` logs, up to ``max_range``; it halves after a range that returned more than
``max_logs`` logs (to keep memory bounded). When a provider refuses a range (errors such as "query returned
more than 10000 results", "block range too large", "response size exceeded", HTTP 413, timeouts) the range
is halved (or set to the range the provider suggests) and retried, and it grows no further than just below
the refused size for the next 32 ranges (then probes wider again); a provider that refuses even a one-block
range raises :class:`IndexerRangeError`.

**Confirmations.** Only blocks at least ``confirmations`` deep are indexed. The default is 0 on development
chains (chain ids 31337 and 1337: anvil, hardhat, ganache; and py-evm's 131277322940537), where nothing
reorganises unless a test asks it to, and :data:`DEFAULT_CONFIRMATIONS` (12) elsewhere.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any, cast

import requests
from eth_utils.address import to_checksum_address
from hexbytes import HexBytes
from web3 import HTTPProvider, Web3
from web3.exceptions import BlockNotFound, Web3Exception, Web3TypeError
from web3.providers import JSONBaseProvider
from web3.types import FilterParams, LogReceipt, RPCEndpoint

from proxima.audit.errors import AuditError
from proxima.audit.store import AuditStore, BlockRef, IndexedEvent, IndexedTransaction
from proxima.sdk.bindings import decode_logs
from proxima.sdk.chain import Deployment
from proxima.sdk.types import Address

__all__ = [
    "DEFAULT_CONFIRMATIONS",
    "DEV_CHAIN_IDS",
    "Indexer",
    "IndexerChainError",
    "IndexerConnectionError",
    "IndexerError",
    "IndexerRangeError",
    "IndexerRpcError",
    "SyncProgress",
    "SyncResult",
    "connect",
    "default_confirmations",
]

log = logging.getLogger(__name__)

DEFAULT_CONFIRMATIONS = 12
"""Confirmation depth on chains that are not development chains."""

DEV_CHAIN_IDS = frozenset({31337, 1337, 131277322940537})
"""Development chains (anvil/hardhat, ganache/geth --dev, py-evm's eth-tester): 0 confirmations by default."""

_BATCH = 200  # JSON-RPC requests per batch
_PROBE_AFTER = 32  # ranges read below a refused size before trying wider ones again
_RANGE_MARKERS = (
    "more than",
    "too many",
    "block range",
    "range too",
    "range is too",
    "exceed",
    "too large",
    "too big",
    "limit",
    "timeout",
    "timed out",
    "response size",
    "payload",
)
_SUGGESTED = re.compile(r"\[\s*(0x[0-9a-fA-F]+)\s*,\s*(0x[0-9a-fA-F]+)\s*\]")


# --- errors ----------------------------------------------------------------------------------------------


class IndexerError(AuditError):
    """The indexer cannot make progress."""


class IndexerConnectionError(IndexerError, ConnectionError):
    """Nothing usable answers at a JSON-RPC URL.

    Args:
        url: The URL.
        reason: What went wrong.
    """

    def __init__(self, url: str, reason: str) -> None:
        self.url = url
        self.reason = reason
        super().__init__(f"no JSON-RPC node answers at {url}: {reason}; check --rpc (and that the node runs)")


class IndexerRpcError(IndexerError):
    """A JSON-RPC call failed for another reason than the size of a range.

    Args:
        method: The call, for example ``"eth_getLogs [100, 199]"``.
        reason: The provider's error.
    """

    def __init__(self, method: str, reason: str) -> None:
        self.method = method
        self.reason = reason
        super().__init__(f"{method} failed: {reason}")


class IndexerRangeError(IndexerError):
    """The provider refuses ``eth_getLogs`` even for a single block.

    Args:
        block: The block.
        reason: The provider's last error.
    """

    def __init__(self, block: int, reason: str) -> None:
        self.block = block
        self.reason = reason
        super().__init__(
            f"the JSON-RPC provider refuses eth_getLogs even for the single block {block}: {reason}; "
            "use a provider without such a limit (an archive node, or your own)"
        )


class IndexerChainError(IndexerError):
    """The chain returned data that contradicts itself or the deployment.

    Args:
        problem: What is wrong.
    """

    def __init__(self, problem: str) -> None:
        self.problem = problem
        super().__init__(f"inconsistent chain data: {problem}")


class _ChainMoved(Exception):  # noqa: N818 - internal signal, never escapes the indexer
    """The chain reorganised while a range was being read."""


# --- results ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SyncProgress:
    """Where a running sync is: indexing ``from_block`` .. ``to_block``, done through ``current``."""

    from_block: int
    to_block: int
    current: int
    events: int
    elapsed_s: float

    @property
    def fraction(self) -> float:
        """Share of the blocks done, 0 to 1."""
        total = self.to_block - self.from_block + 1
        return 1.0 if total <= 0 else min(1.0, (self.current - self.from_block + 1) / total)


@dataclass(frozen=True)
class SyncResult:
    """What one sync did: blocks ``from_block`` .. ``to_block`` indexed (empty when ``to_block`` is below
    ``from_block``), events and transactions written, events rolled back by a reorg, seconds taken."""

    from_block: int
    to_block: int
    events: int
    transactions: int
    rolled_back: int
    elapsed_s: float


def default_confirmations(chain_id: int) -> int:
    """0 on development chains (:data:`DEV_CHAIN_IDS`), :data:`DEFAULT_CONFIRMATIONS` elsewhere."""
    return 0 if chain_id in DEV_CHAIN_IDS else DEFAULT_CONFIRMATIONS


def connect(url: str, *, timeout: float = 30.0) -> Web3:
    """A web3 connection to an HTTP(S) JSON-RPC URL, checked to answer ``eth_chainId``.

    The caller compares the chain id with the deployment's (:meth:`AuditStore.bind` does).

    Args:
        url: ``http://`` or ``https://`` URL.
        timeout: Seconds to wait for one answer.

    Raises:
        IndexerConnectionError: If the URL is not HTTP(S) or nothing answers there.
    """
    if not url.startswith(("http://", "https://")):
        raise IndexerConnectionError(url, "only http:// and https:// URLs are supported")
    w3 = Web3(HTTPProvider(url, request_kwargs={"timeout": timeout}))
    try:
        chain_id = int(w3.eth.chain_id)
    except (requests.RequestException, Web3Exception, OSError, ValueError) as err:
        raise IndexerConnectionError(url, str(err) or type(err).__name__) from err
    log.debug("connected", extra={"url": url, "chain_id": chain_id})
    return w3


def _message(err: BaseException) -> str:
    response = getattr(err, "rpc_response", None)
    if isinstance(response, dict) and isinstance(response.get("error"), dict):
        error = response["error"]
        return f"{error.get('message', '')} (code {error.get('code')})"
    if isinstance(err, requests.HTTPError) and err.response is not None:
        return f"HTTP {err.response.status_code}: {err.response.text[:200]}"
    return str(err) or type(err).__name__


def _is_range_error(err: BaseException) -> bool:
    """Whether a failed ``eth_getLogs`` says the range (or its answer) was too big or too slow."""
    if isinstance(err, requests.Timeout | TimeoutError):
        return True
    response = err.response if isinstance(err, requests.HTTPError) else None
    if response is not None and response.status_code in (413, 502, 503, 504):
        return True
    text = _message(err).lower()
    return any(marker in text for marker in _RANGE_MARKERS)


def _suggested_span(err: BaseException) -> int | None:
    """The range a provider suggests in its error ("... try with this block range [0x10, 0x2f]")."""
    match = _SUGGESTED.search(_message(err))
    if match is None:
        return None
    low, high = int(match.group(1), 16), int(match.group(2), 16)
    return high - low + 1 if high >= low else None


def _bytes(value: Any, what: str) -> bytes:
    if isinstance(value, bytes | bytearray):
        return bytes(value)
    if isinstance(value, str) and value.startswith("0x"):
        try:
            return bytes.fromhex(value[2:])
        except ValueError:
            pass
    raise IndexerChainError(f"{what} is not hex bytes: {value!r}"[:300])


def _int(value: Any, what: str) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and value.startswith("0x"):
        try:
            return int(value, 16)
        except ValueError:
            pass
    raise IndexerChainError(f"{what} is not a number: {value!r}")


_LOG_FIELDS = ("address", "topics", "data", "blockNumber", "blockHash", "transactionHash", "logIndex")


def _normalise_log(entry: Any, where: str) -> dict[str, Any]:
    """A log from ``eth_getLogs`` (raw JSON or web3-formatted) with ints and bytes; checked field by field."""
    if not isinstance(entry, Mapping) or any(entry.get(k) is None for k in _LOG_FIELDS):
        raise IndexerChainError(f"{where} returned an incomplete log: {entry!r}"[:300])
    topics = entry["topics"]
    if not isinstance(topics, list | tuple):
        raise IndexerChainError(f"{where} returned a log whose topics are not a list: {topics!r}"[:300])
    return {
        "address": str(entry["address"]),
        "topics": [_bytes(t, "log topic") for t in topics],
        "data": _bytes(entry["data"], "log data"),
        "blockNumber": _int(entry["blockNumber"], "log block number"),
        "blockHash": _bytes(entry["blockHash"], "log block hash"),
        "transactionHash": _bytes(entry["transactionHash"], "log transaction hash"),
        "transactionIndex": _int(entry.get("transactionIndex", 0), "log transaction index"),
        "logIndex": _int(entry["logIndex"], "log index"),
        "removed": bool(entry.get("removed", False)),
    }


# --- the indexer -----------------------------------------------------------------------------------------


class Indexer:
    """Index one deployment's events into a store.

    Args:
        w3: A connection to the chain (:func:`connect`, or a chain object's ``w3``).
        store: Where to write.
        deployment: The contracts to follow (addresses and first block).
        confirmations: Index up to ``head - confirmations``; see :func:`default_confirmations`.
        initial_range: Blocks per ``eth_getLogs`` to start with.
        max_range: The range never grows beyond this.
        max_logs: A range that returned more logs than this is halved for the next one.

    Raises:
        ValueError: If a range setting or ``confirmations`` is out of bounds.
    """

    def __init__(
        self,
        w3: Web3,
        store: AuditStore,
        deployment: Deployment,
        *,
        confirmations: int | None = None,
        initial_range: int = 2_000,
        max_range: int = 100_000,
        max_logs: int = 20_000,
    ) -> None:
        if confirmations is not None and confirmations < 0:
            raise ValueError(f"confirmations must be >= 0, got {confirmations}")
        if not 1 <= initial_range <= max_range:
            raise ValueError(f"need 1 <= initial_range <= max_range, got {initial_range} and {max_range}")
        if max_logs < 1:
            raise ValueError(f"max_logs must be >= 1, got {max_logs}")
        self.w3 = w3
        self.store = store
        self.deployment = deployment
        self.max_range = max_range
        self.max_logs = max_logs
        self.range = initial_range
        self._confirmations = confirmations
        self._names: dict[Address, str] = {
            to_checksum_address(a): n for n, a in sorted(deployment.contracts.items())
        }
        self._addresses = sorted(self._names)
        self._ceiling: int | None = None  # below the last range a provider refused
        self._streak = 0  # ranges read since that refusal
        self._batch_ok: bool | None = None
        self._chain_id: int | None = None

    # --- public --------------------------------------------------------------------------------------

    @property
    def chain_id(self) -> int:
        """The endpoint's chain id (read once)."""
        if self._chain_id is None:
            self._chain_id = int(self._call("eth_chainId", lambda: self.w3.eth.chain_id))
        return self._chain_id

    @property
    def confirmations(self) -> int:
        """The confirmation depth in use."""
        if self._confirmations is None:
            return default_confirmations(self.chain_id)
        return self._confirmations

    def sync(
        self, to_block: int | None = None, *, progress: Callable[[SyncProgress], None] | None = None
    ) -> SyncResult:
        """Index every confirmed block not yet indexed (see the module docstring).

        Args:
            to_block: Stop at this block (never beyond ``head - confirmations``).
            progress: Called after each committed range.

        Returns:
            What was done.

        Raises:
            AuditStoreMismatchError: If the store indexes another deployment or chain.
            IndexerRangeError: If the provider refuses even one-block ranges.
            IndexerRpcError: If another RPC call fails (the sync can be re-run; committed ranges stay).
            IndexerChainError: If the chain's answers contradict each other.
        """
        started = time.monotonic()
        self.store.bind(self.deployment, self.chain_id)
        rolled_back = self._check_reorg()
        head = int(self._call("eth_blockNumber", lambda: self.w3.eth.block_number))
        target = head - self.confirmations
        if to_block is not None:
            target = min(target, to_block)
        checkpoint = self.store.checkpoint()
        first = checkpoint.number + 1 if checkpoint is not None else self.deployment.block_number
        start, events, transactions = first, 0, 0
        # Idle polls (nothing new) log at DEBUG so a follower does not fill the logs.
        level = logging.INFO if first <= target else logging.DEBUG
        log.log(
            level,
            "audit sync started",
            extra={
                "from_block": first,
                "to_block": target,
                "head": head,
                "confirmations": self.confirmations,
            },
        )
        while start <= target:
            end = min(target, start + self.range - 1)
            try:
                n_events, n_txs, end = self._index_range(start, end, checkpoint)
            except _ChainMoved:
                log.warning("audit chain moved during the sync", extra={"from_block": start})
                rolled_back += self._check_reorg(force=True)
                checkpoint = self.store.checkpoint()
                start = checkpoint.number + 1 if checkpoint is not None else self.deployment.block_number
                first = min(first, start)
                continue
            events += n_events
            transactions += n_txs
            checkpoint = self.store.checkpoint()
            start = end + 1
            if progress is not None:
                progress(SyncProgress(first, target, end, events, time.monotonic() - started))
        result = SyncResult(
            from_block=first,
            to_block=max(target, first - 1),
            events=events,
            transactions=transactions,
            rolled_back=rolled_back,
            elapsed_s=time.monotonic() - started,
        )
        log.log(
            logging.INFO if events or rolled_back or result.to_block >= result.from_block else logging.DEBUG,
            "audit sync done",
            extra={
                "from_block": result.from_block,
                "to_block": result.to_block,
                "events": events,
                "transactions": transactions,
                "rolled_back": rolled_back,
                "elapsed_s": round(result.elapsed_s, 3),
            },
        )
        return result

    def follow(
        self,
        *,
        interval_s: float,
        stop: threading.Event,
        progress: Callable[[SyncProgress], None] | None = None,
    ) -> None:
        """Sync, then again every ``interval_s`` seconds, until ``stop`` is set.

        RPC failures are logged and retried at the next interval; a store bound to another deployment, and
        errors of the store itself, end the loop by raising.

        Args:
            interval_s: Seconds between syncs.
            stop: Set it to end the loop (it is checked while waiting).
            progress: Passed to each :meth:`sync`.
        """
        if interval_s <= 0:
            raise ValueError(f"interval_s must be > 0, got {interval_s}")
        while not stop.is_set():
            try:
                self.sync(progress=progress)
            except (IndexerRpcError, IndexerRangeError, IndexerChainError) as err:
                log.warning(
                    "audit sync failed; retrying", extra={"error": str(err), "retry_in_s": interval_s}
                )
            stop.wait(interval_s)

    # --- reorgs --------------------------------------------------------------------------------------

    def _chain_hash(self, number: int) -> bytes | None:
        """The chain's hash of block ``number``, or ``None`` if the chain does not reach it."""
        try:
            block = self._call(f"eth_getBlockByNumber {number}", lambda: self.w3.eth.get_block(number))
        except IndexerRpcError as err:
            if isinstance(err.__cause__, BlockNotFound):
                return None
            raise
        return _bytes(block["hash"], f"block {number} hash")

    def _check_reorg(self, *, force: bool = False) -> int:
        """Roll back to the common ancestor if the stored checkpoint left the chain; events removed."""
        checkpoint = self.store.checkpoint()
        if checkpoint is None:
            return 0
        if not force and self._chain_hash(checkpoint.number) == checkpoint.hash:
            return 0
        numbers = self.store.block_numbers()
        # Stored blocks the chain still has form a prefix of ``numbers``: find its end by binary search.
        low, high = 0, len(numbers) - 1
        keep = -1
        while low <= high:
            middle = (low + high) // 2
            stored = self.store.block(numbers[middle])
            if stored is not None and self._chain_hash(stored.number) == stored.hash:
                keep, low = middle, middle + 1
            else:
                high = middle - 1
        if keep == len(numbers) - 1:
            return 0  # forced check, nothing moved below the checkpoint
        ancestor = numbers[keep] if keep >= 0 else self.deployment.block_number - 1
        removed = self.store.rollback_to(ancestor)
        log.warning(
            "audit reorg rolled back",
            extra={
                "checkpoint": checkpoint.number,
                "checkpoint_hash": "0x" + checkpoint.hash.hex(),
                "common_ancestor": ancestor,
                "events_removed": removed,
            },
        )
        return removed

    # --- one range -----------------------------------------------------------------------------------

    def _index_range(self, start: int, end: int, checkpoint: BlockRef | None) -> tuple[int, int, int]:
        """Index ``start`` .. ``end`` (shrunk if the provider refuses): (events, transactions, last block)."""
        while True:
            try:
                pinned = self._header(end)
                logs = self._get_logs(start, end)
                break
            except _RangeRefused as refused:
                span = end - start + 1
                if span == 1:
                    raise IndexerRangeError(start, refused.reason) from refused.__cause__
                suggested = refused.suggested
                new_span = suggested if suggested is not None and suggested < span else max(1, span // 2)
                log.info(
                    "audit range refused; shrinking",
                    extra={
                        "from_block": start,
                        "to_block": end,
                        "new_range": new_span,
                        "reason": refused.reason,
                    },
                )
                self.range = new_span
                self._ceiling, self._streak = span - 1, 0
                end = start + new_span - 1
        span = end - start + 1
        self._streak += 1
        if self._ceiling is not None and self._streak >= _PROBE_AFTER:
            self._ceiling = None  # probe wider ranges again: the provider's limit may depend on the results
        if len(logs) > self.max_logs and span > 1:
            self.range = max(1, span // 2)
        elif len(logs) <= self.max_logs // 2:
            limit = self.max_range if self._ceiling is None else min(self.max_range, self._ceiling)
            self.range = min(limit, max(self.range, span * 2))

        numbers = sorted({entry["blockNumber"] for entry in logs} | {start, end})
        headers = {h.number: h for h in self._headers(numbers)}
        if headers[end].hash != pinned.hash:
            raise _ChainMoved
        after = checkpoint is not None and start == checkpoint.number + 1
        if after and checkpoint is not None and headers[start].parent_hash != checkpoint.hash:
            raise _ChainMoved  # the range does not continue the indexed chain
        for entry in logs:
            if entry["blockHash"] != headers[entry["blockNumber"]].hash:
                raise _ChainMoved

        events = self._decode(logs, headers)
        order = sorted({(e.block_number, e.tx_index, e.tx_hash) for e in events})
        transactions = self._transactions(list(dict.fromkeys(h for _, _, h in order)), headers)
        blocks = [headers[n] for n in sorted({e.block_number for e in events})]
        self.store.write_range(events, transactions, blocks, headers[end])
        log.debug(
            "audit range indexed",
            extra={
                "from_block": start,
                "to_block": end,
                "events": len(events),
                "transactions": len(transactions),
            },
        )
        return len(events), len(transactions), end

    def _get_logs(self, start: int, end: int) -> list[dict[str, Any]]:
        """The range's logs, normalised (ints, bytes, addresses as given).

        Over JSON-RPC the answer is read raw: web3's result formatters (checksumming every address,
        attribute dicts) cost more than everything else the indexer does with a log.
        """
        where = f"eth_getLogs [{start}, {end}]"
        try:
            if isinstance(self.w3.provider, JSONBaseProvider):
                params = {"address": self._addresses, "fromBlock": hex(start), "toBlock": hex(end)}
                response = self.w3.provider.make_request(RPCEndpoint("eth_getLogs"), [params])
                if "error" in response:
                    raise _RpcAnswerError(response)
                raw: Any = response.get("result")
            else:
                filter_params: FilterParams = {"address": self._addresses, "fromBlock": start, "toBlock": end}
                raw = self.w3.eth.get_logs(filter_params)
        except Exception as err:
            if _is_range_error(err):
                raise _RangeRefused(_message(err), _suggested_span(err)) from err
            if isinstance(
                err, requests.RequestException | Web3Exception | OSError | ValueError | _RpcAnswerError
            ):
                raise IndexerRpcError(where, _message(err)) from err
            raise
        if not isinstance(raw, list):
            raise IndexerChainError(f"{where} answered {type(raw).__name__}, not a list of logs")
        return [_normalise_log(entry, where) for entry in raw]

    def _decode(self, logs: Sequence[dict[str, Any]], headers: dict[int, BlockRef]) -> list[IndexedEvent]:
        raw = {(e["blockNumber"], e["logIndex"]): e for e in logs if not e["removed"]}
        decoded = decode_logs(cast(list[LogReceipt], list(raw.values())), self._names)
        if len(decoded) != len(raw):
            known = {(d.block_number, d.log_index) for d in decoded}
            for key in sorted(set(raw) - known):
                log.warning(
                    "audit log skipped: unknown event",
                    extra={"block": key[0], "log_index": key[1], "address": raw[key]["address"]},
                )
        events: list[IndexedEvent] = []
        for d in decoded:
            entry = raw[(d.block_number, d.log_index)]
            events.append(
                IndexedEvent(
                    block_number=d.block_number,
                    log_index=d.log_index,
                    tx_hash=entry["transactionHash"],
                    tx_index=entry["transactionIndex"],
                    contract=d.contract,
                    address=d.address,
                    name=d.name,
                    args=d.args,
                    timestamp=headers[d.block_number].timestamp,
                )
            )
        events.sort(key=lambda e: (e.block_number, e.log_index))
        return events

    # --- RPC plumbing --------------------------------------------------------------------------------

    def _call(self, method: str, call: Callable[[], Any]) -> Any:
        try:
            return call()
        except (requests.RequestException, Web3Exception, OSError, ValueError) as err:
            raise IndexerRpcError(method, _message(err)) from err

    def _batch(self, method: str, requests_: Sequence[tuple[str, Any]]) -> list[Any]:
        """Run ``(kind, arg)`` requests (kinds: block, tx), batched when the provider allows it."""
        if self._batch_ok is not False:
            results: list[Any] = []
            try:
                for i in range(0, len(requests_), _BATCH):
                    with self.w3.batch_requests() as batch:
                        for kind, arg in requests_[i : i + _BATCH]:
                            batch.add(self._method(kind)(arg))
                        results.extend(batch.execute())
                self._batch_ok = True
                return results
            except Web3TypeError:
                self._batch_ok = False  # the provider takes no batches (py-evm's tester provider)
            except (requests.RequestException, Web3Exception, OSError, ValueError) as err:
                if self._batch_ok is None:
                    self._batch_ok = False
                    log.info("audit provider refuses batch requests", extra={"error": _message(err)})
                else:
                    raise IndexerRpcError(method, _message(err)) from err
        return [self._call(f"{method} {kind}", partial(self._method(kind), arg)) for kind, arg in requests_]

    def _method(self, kind: str) -> Callable[[Any], Any]:
        return self.w3.eth.get_block if kind == "block" else self.w3.eth.get_transaction

    def _header(self, number: int) -> BlockRef:
        return self._headers([number])[0]

    def _headers(self, numbers: Sequence[int]) -> list[BlockRef]:
        blocks = self._batch("eth_getBlockByNumber", [("block", n) for n in numbers])
        refs: list[BlockRef] = []
        for number, block in zip(numbers, blocks, strict=True):
            if block is None or int(block["number"]) != number:
                raise _ChainMoved
            refs.append(
                BlockRef(
                    number=number,
                    hash=_bytes(block["hash"], f"block {number} hash"),
                    parent_hash=_bytes(block["parentHash"], f"block {number} parent hash"),
                    timestamp=int(block["timestamp"]),
                )
            )
        return refs

    def _transactions(
        self, hashes: Iterable[bytes], headers: dict[int, BlockRef]
    ) -> list[IndexedTransaction]:
        """Each transaction; it must lie in the block whose header was read.

        Its status is 1: only a successful transaction leaves logs (a reverted one's are discarded), and
        every transaction here emitted some. The receipt is not fetched: it repeats every log of the
        transaction (for a 500-measurement attestation batch it is 100 times the transaction's size).
        """
        wanted = list(hashes)
        answers = self._batch("eth_getTransactionByHash", [("tx", HexBytes(h)) for h in wanted])
        out: list[IndexedTransaction] = []
        for tx_hash, tx in zip(wanted, answers, strict=True):
            if tx is None:
                raise _ChainMoved
            if _bytes(tx["hash"], "transaction hash") != tx_hash:
                raise IndexerChainError(
                    f"asked for transaction 0x{tx_hash.hex()}, got 0x{bytes(tx['hash']).hex()}"
                )
            number = int(tx["blockNumber"])
            header = headers.get(number)
            if header is None or _bytes(tx["blockHash"], "transaction block hash") != header.hash:
                raise _ChainMoved
            to = tx.get("to")
            out.append(
                IndexedTransaction(
                    hash=tx_hash,
                    block_number=number,
                    tx_index=int(tx["transactionIndex"]),
                    sender=to_checksum_address(tx["from"]),
                    to=None if to is None else to_checksum_address(to),
                    input=_bytes(tx["input"], "transaction input"),
                    value=int(tx["value"]),
                    status=1,
                )
            )
        return out


class _RpcAnswerError(Exception):
    """An error answer read from a raw request."""

    def __init__(self, response: Any) -> None:
        self.rpc_response = response  # read by _message, like web3's Web3RPCError
        super().__init__(str(response.get("error")))


class _RangeRefused(Exception):  # noqa: N818 - internal signal
    def __init__(self, reason: str, suggested: int | None) -> None:
        self.reason = reason
        self.suggested = suggested
        super().__init__(reason)
