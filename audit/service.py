"""The auditor's service: one indexed store, the ledger folded from it, sync, follow, verify and locations.

:class:`AuditService` is what the CLI (:mod:`proxima.audit.cli`), the HTTP API (:mod:`proxima.audit.api`)
and the explorer share. It holds:

* the :class:`~proxima.audit.store.AuditStore` and, when a JSON-RPC endpoint is given, a ``Web3`` for
  :meth:`~AuditService.sync`, the background follower and :meth:`~AuditService.verify`;
* the :class:`~proxima.audit.ledger.AuditLedger` at the store's checkpoint, folded from events once per
  checkpoint and cached (a new block invalidates it);
* the last :class:`~proxima.audit.verify.VerifyReport`;
* provider locations *as claimed in the providers' signed offers*: :meth:`~AuditService.set_offers` keeps,
  per provider, the highest-``seq`` offer whose signature recovers to its provider (an unsigned or
  forged offer is dropped and logged). A location is the provider's own claim, not something the chain
  proves; every view labels it so.

Thread safety: the background follower, HTTP worker threads and the CLI can share one service. Syncs and
verifications take turns (one lock); folding the ledger takes another, so a request never waits for a long
sync: the store commits whole ranges, and a fold reads the index at one checkpoint. Concurrent requests after
a new block fold it once.

The ledger parameters (fees, epoch length...) are read from the contracts' view functions
(:func:`~proxima.audit.ledger.read_parameters`), never from the deployment file. When no endpoint is given
(offline commands on an indexed database) they come from the store, where the service saved them at the
last sync it made.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Final

import httpx
from pydantic import ValidationError
from web3 import Web3

from proxima.audit.errors import AuditError
from proxima.audit.indexer import Indexer, SyncProgress, SyncResult
from proxima.audit.ledger import AuditLedger, LedgerParameters, ledger_of, read_parameters
from proxima.audit.store import AuditStore, BlockRef
from proxima.audit.verify import VerifyReport, verify
from proxima.sdk.chain.devnet import Deployment
from proxima.sdk.errors import SignatureError
from proxima.sdk.offers import SignedOffer

__all__ = [
    "LOCATION_SOURCE",
    "AuditService",
    "EmptyIndexError",
    "NoRpcError",
    "OffersFetchError",
    "ProviderLocation",
    "VerifyBusyError",
    "fetch_offers",
]

log = logging.getLogger(__name__)

LOCATION_SOURCE: Final = "as claimed in the provider's signed offer"
"""How every location is labelled: the provider says so; nothing on chain proves it."""

_PARAMETERS_META: Final = "ledger_parameters"


class EmptyIndexError(AuditError):
    """The store has no indexed block yet.

    Args:
        where: The database (path or description).
    """

    def __init__(self, where: str) -> None:
        self.where = where
        super().__init__(f"the index {where} is empty; run `proxima-audit sync` first")


class NoRpcError(AuditError):
    """An operation needs the JSON-RPC endpoint, and the service has none.

    Args:
        operation: What was asked (``"sync"``, ``"verify"``).
    """

    def __init__(self, operation: str) -> None:
        self.operation = operation
        super().__init__(f"{operation} needs a JSON-RPC endpoint (--rpc URL); this auditor runs offline")


class VerifyBusyError(AuditError):
    """A verification is already running."""

    def __init__(self) -> None:
        super().__init__("a verification is already running; wait for it and read its report")


@dataclass(frozen=True)
class ProviderLocation:
    """Where a provider says it is, from its signed offer.

    Attributes:
        provider: The provider's checksummed address.
        region: The offer's free-form region label.
        country: The offer's ISO 3166-1 alpha-2 code.
        seq: The offer's sequence number.
        issued_at: When the offer was signed (Unix seconds).
        expires_at: When the offer expires (Unix seconds).
        source: Always :data:`LOCATION_SOURCE`.
    """

    provider: str
    region: str
    country: str
    seq: int
    issued_at: int
    expires_at: int
    source: str = LOCATION_SOURCE


class AuditService:
    """Shared state of an auditor: store, optional chain endpoint, cached ledger, locations, verify report.

    Args:
        store: The indexed store (bound to ``deployment`` at the first sync).
        w3: A connected JSON-RPC endpoint, or None to work offline on what the store holds.
        deployment: The contracts' addresses and deployment block; None: the one the store is bound to.
        follow: Follow the chain in a background thread between :meth:`start` and :meth:`stop`.
        follow_interval_s: Seconds between the follower's polls.
        confirmations: Blocks kept back from the head (None: the indexer's default for the chain).
        parameters: Ledger parameters to use instead of reading them from the chain (tests, replays).
        offer_source: Where to read signed offers from when locations are asked for (a gateway passes its
            offer book: ``lambda: market.offers()``); see :meth:`set_offers`.
        offer_refresh_s: Read ``offer_source`` at most this often.

    Raises:
        AuditError: If neither ``deployment`` nor the store names a deployment.
    """

    def __init__(
        self,
        store: AuditStore,
        w3: Web3 | None = None,
        deployment: Deployment | None = None,
        *,
        follow: bool = False,
        follow_interval_s: float = 2.0,
        confirmations: int | None = None,
        parameters: LedgerParameters | None = None,
        offer_source: Callable[[], Iterable[SignedOffer]] | None = None,
        offer_refresh_s: float = 10.0,
    ) -> None:
        resolved = deployment if deployment is not None else store.deployment
        if resolved is None:
            raise AuditError("no deployment: give the deployment file (--deployment) or an indexed store")
        if follow and w3 is None:
            raise NoRpcError("follow")
        if follow_interval_s <= 0:
            raise ValueError(f"follow_interval_s must be positive, got {follow_interval_s}")
        self.store = store
        self.w3 = w3
        self.deployment = resolved
        self.follow = follow
        self.follow_interval_s = follow_interval_s
        self.confirmations = confirmations
        self._parameters = parameters
        self._sync_lock = threading.RLock()
        self._cache_lock = threading.Lock()
        self._memo_parameters: LedgerParameters | None = None
        self._cached: tuple[tuple[int, bytes], AuditLedger] | None = None
        self._offers: dict[str, SignedOffer] = {}
        self._offers_lock = threading.Lock()
        self.offer_source = offer_source
        self.offer_refresh_s = offer_refresh_s
        self._offers_read_at = float("-inf")
        self._verify_lock = threading.Lock()
        self._last_report: VerifyReport | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._indexer: Indexer | None = None
        self.follow_error: str | None = None

    # --- lifecycle -----------------------------------------------------------------------------------

    def start(self) -> None:
        """Start the background follower (when ``follow`` is set); a no-op otherwise or when running."""
        if not self.follow or self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._follow_loop, name="proxima-audit-follow", daemon=True)
        self._thread.start()
        log.info("audit follower started", extra={"interval_s": self.follow_interval_s})

    def stop(self, timeout_s: float = 30.0) -> None:
        """Stop the background follower and wait for it (at most ``timeout_s``)."""
        thread = self._thread
        if thread is None:
            return
        self._stop.set()
        thread.join(timeout_s)
        self._thread = None
        log.info("audit follower stopped")

    def __enter__(self) -> AuditService:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def following(self) -> bool:
        """Whether the background follower runs."""
        return self._thread is not None and self._thread.is_alive()

    def _follow_loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.sync()
                self.follow_error = None
            except Exception as err:  # noqa: BLE001 - the follower survives a flaky endpoint; the error is shown
                self.follow_error = str(err)
                log.warning("audit follow: sync failed; retrying", extra={"error": str(err)})
            self._stop.wait(self.follow_interval_s)

    # --- chain -----------------------------------------------------------------------------------------

    def _require_w3(self, operation: str) -> Web3:
        if self.w3 is None:
            raise NoRpcError(operation)
        return self.w3

    def _indexer_for(self, w3: Web3, confirmations: int | None) -> Indexer:
        if confirmations is not None and confirmations != self.confirmations:
            return Indexer(w3, self.store, self.deployment, confirmations=confirmations)
        if self._indexer is None:
            self._indexer = Indexer(w3, self.store, self.deployment, confirmations=self.confirmations)
        return self._indexer

    def sync(
        self,
        to_block: int | None = None,
        *,
        confirmations: int | None = None,
        progress: Callable[[SyncProgress], None] | None = None,
    ) -> SyncResult:
        """Index new blocks (up to ``to_block``, else the confirmed head) and refresh the parameters.

        Args:
            to_block: Last block to index; None: the head less the confirmation depth.
            confirmations: Override the service's confirmation depth for this sync.
            progress: Called as the indexer advances.

        Returns:
            What the indexer did.

        Raises:
            NoRpcError: Without an endpoint.
        """
        w3 = self._require_w3("sync")
        with self._sync_lock:
            result = self._indexer_for(w3, confirmations).sync(to_block, progress=progress)
            checkpoint = self.store.checkpoint()
            saved = self._memo_parameters
            stale = saved is None or result.events > 0 or result.rolled_back > 0
            if checkpoint is not None and self._parameters is None and stale:
                self._save_parameters(read_parameters(w3, self.deployment, checkpoint.number))
        return result

    def _save_parameters(self, parameters: LedgerParameters) -> None:
        self._memo_parameters = parameters
        if not self.store.readonly:
            self.store.set_meta(_PARAMETERS_META, parameters.model_dump_json())

    def parameters(self) -> LedgerParameters:
        """The ledger parameters: given, read at the last sync (kept in the store), or read from the chain.

        Raises:
            NoRpcError: If none were saved and there is no endpoint to read them from.
        """
        if self._parameters is not None:
            return self._parameters
        with self._sync_lock:
            if self._memo_parameters is not None:
                return self._memo_parameters
            saved = self.store.get_meta(_PARAMETERS_META)
            if saved is not None:
                try:
                    self._memo_parameters = LedgerParameters.model_validate_json(saved)
                    return self._memo_parameters
                except ValidationError as err:
                    log.warning(
                        "saved ledger parameters unreadable; reading them again", extra={"error": str(err)}
                    )
            w3 = self._require_w3("reading the ledger parameters")
            checkpoint = self.store.checkpoint()
            parameters = read_parameters(
                w3, self.deployment, "latest" if checkpoint is None else checkpoint.number
            )
            self._save_parameters(parameters)
            return parameters

    # --- ledger -----------------------------------------------------------------------------------------

    def checkpoint(self) -> BlockRef | None:
        """The last fully indexed block, or None before the first sync."""
        return self.store.checkpoint()

    def ledger(self) -> AuditLedger:
        """The ledger at the store's checkpoint, folded from events (cached until the checkpoint moves).

        A sync running meanwhile does not block this: the store commits whole ranges, so the fold sees the
        index at one checkpoint.

        Raises:
            EmptyIndexError: Before the first sync.
        """
        with self._cache_lock:  # one fold at a time; the others then find it cached
            checkpoint = self.store.checkpoint()
            if checkpoint is None:
                raise EmptyIndexError(self.where)
            key = (checkpoint.number, checkpoint.hash)
            cached = self._cached
            if cached is not None and cached[0] == key:
                return cached[1]
            started = time.perf_counter()
            ledger = ledger_of(self.store, self.parameters())
            self._cached = (key, ledger)
        log.info(
            "ledger folded",
            extra={
                "block": ledger.block_number,
                "events": ledger.events,
                "ms": round((time.perf_counter() - started) * 1000, 1),
            },
        )
        return ledger

    @property
    def where(self) -> str:
        """The store, for messages."""
        return str(getattr(self.store, "path", "(in memory)"))

    # --- verify -----------------------------------------------------------------------------------------

    def verify(self, progress: Callable[[str, int, int], None] | None = None) -> VerifyReport:
        """Re-check the index against the chain (signatures, state, money); keep the report.

        Raises:
            NoRpcError: Without an endpoint.
            EmptyIndexError: Before the first sync.
            VerifyBusyError: If another verification is running.
        """
        w3 = self._require_w3("verify")
        if not self._verify_lock.acquire(blocking=False):
            raise VerifyBusyError
        try:
            with self._sync_lock:
                if self.store.checkpoint() is None:
                    raise EmptyIndexError(self.where)
                report = verify(self.store, w3, progress=progress)
            self._last_report = report
            log.info(
                "verification finished",
                extra={"block": report.block_number, "discrepancies": len(report.discrepancies)},
            )
            return report
        finally:
            self._verify_lock.release()

    @property
    def last_report(self) -> VerifyReport | None:
        """The report of the last :meth:`verify`, if any."""
        return self._last_report

    # --- locations --------------------------------------------------------------------------------------

    def set_offers(self, offers: Iterable[SignedOffer]) -> int:
        """Learn providers' claimed locations from their signed offers.

        Each offer's signature must recover to its provider; others are dropped (logged). Per provider the
        highest ``seq`` wins; an offer older than the one kept changes nothing.

        Args:
            offers: Signed offers (from a gateway's offer book or its ``/v1/offers``).

        Returns:
            How many offers were accepted (new or newer).
        """
        accepted = 0
        for signed in offers:
            provider = signed.offer.provider
            with self._offers_lock:
                kept = self._offers.get(provider)
            if kept is not None and kept.offer.seq >= signed.offer.seq:
                continue  # not newer: no signature to check
            try:
                signer = signed.signer()
            except SignatureError as err:
                log.warning("offer dropped: bad signature", extra={"provider": provider, "error": str(err)})
                continue
            if signer != provider:
                log.warning(
                    "offer dropped: signed by another key", extra={"provider": provider, "signer": signer}
                )
                continue
            with self._offers_lock:
                kept = self._offers.get(provider)
                if kept is not None and kept.offer.seq >= signed.offer.seq:
                    continue
                self._offers[provider] = signed
            accepted += 1
        return accepted

    def locations(self) -> dict[str, ProviderLocation]:
        """Each provider's location as claimed in its signed offer, by address.

        With an ``offer_source``, its offers are read first (at most every ``offer_refresh_s`` seconds).
        """
        source = self.offer_source
        if source is not None and time.monotonic() >= self._offers_read_at + self.offer_refresh_s:
            self._offers_read_at = time.monotonic()
            try:
                self.set_offers(list(source()))
            except Exception as err:  # noqa: BLE001 - a failing source leaves the locations known so far
                log.warning("offer source failed; keeping the locations known", extra={"error": str(err)})
        with self._offers_lock:
            offers = list(self._offers.values())
        return {
            s.offer.provider: ProviderLocation(
                provider=s.offer.provider,
                region=s.offer.region,
                country=s.offer.country,
                seq=s.offer.seq,
                issued_at=s.offer.issued_at,
                expires_at=s.offer.expires_at,
            )
            for s in sorted(offers, key=lambda s: s.offer.provider)
        }

    @contextmanager
    def locked(self) -> Iterator[AuditStore]:
        """The store, held exclusively (for reads that must not interleave with a sync)."""
        with self._sync_lock:
            yield self.store


class OffersFetchError(AuditError):
    """A gateway's offers could not be read.

    Args:
        url: The offers URL.
        problem: What went wrong.
    """

    def __init__(self, url: str, problem: str) -> None:
        super().__init__(f"cannot read offers from {url}: {problem}")


def fetch_offers(
    gateway_url: str, api_key: str | None = None, *, timeout_s: float = 10.0
) -> list[SignedOffer]:
    """Read a gateway's live signed offers (``GET /v1/offers``) for :meth:`AuditService.set_offers`.

    Each entry is rebuilt into a :class:`SignedOffer`; its signature is checked later by ``set_offers``, so
    a gateway cannot invent a location: it can only relay what a provider signed.

    Args:
        gateway_url: The gateway's base URL (``http://127.0.0.1:8080``).
        api_key: A gateway API key (``/v1/offers`` needs one), or None.
        timeout_s: Longest wait for the answer.

    Returns:
        The offers that parse (malformed entries are logged and skipped).

    Raises:
        OffersFetchError: If the gateway cannot be reached or answers with an error.
    """
    url = gateway_url.rstrip("/") + "/v1/offers"
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    try:
        response = httpx.get(url, headers=headers, timeout=timeout_s)
    except httpx.HTTPError as err:
        raise OffersFetchError(url, f"{type(err).__name__}: {err}") from err
    if response.status_code != 200:
        raise OffersFetchError(url, f"HTTP {response.status_code} {response.text[:200]}")
    try:
        entries = response.json()["data"]
        if not isinstance(entries, list):
            raise TypeError("data is not a list")
    except (ValueError, KeyError, TypeError) as err:
        raise OffersFetchError(url, f"not an offer list ({err})") from err
    offers: list[SignedOffer] = []
    for entry in entries:
        try:
            fields = dict(entry)
            signature = fields.pop("signature")
            fields["workloads"] = [
                {**w, "unit_price_wei": int(w["unit_price_wei"])} for w in fields["workloads"]
            ]
            # From JSON text: the offer models are strict, and JSON arrays are their tuples only in JSON mode.
            text = json.dumps({"offer": fields, "signature": signature})
            offers.append(SignedOffer.model_validate_json(text))
        except (ValidationError, KeyError, TypeError, ValueError) as err:
            log.warning("gateway offer skipped: malformed", extra={"url": url, "error": str(err)[:200]})
    return offers
