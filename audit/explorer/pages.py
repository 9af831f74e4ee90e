"""The web explorer's pages: :func:`explorer_router` (server-rendered HTML; no JavaScript, nothing fetched).

==================================  ===================================================================
``GET /``                           overview: totals, charts over time (jobs, volume, stake, slashes)
``GET /providers``                  region map and table of providers and verifiers (``sort``,
                                    ``order``, ``role``, ``country``, ``limit``, ``offset``)
``GET /providers/{address}``        one account: its row, attestations, reports, slashes, jobs, epochs
                                    (a client or finder gets its jobs and proofs; unknown: 404)
``GET /jobs``                       escrow jobs, paged (``provider``, ``client``, ``status``, ``order``)
``GET /jobs/{job_id}``              one job with its slashes
``GET /slashes``                    slashes with their evidence (``provider``, ``kind``)
``GET /rewards``                    reward epochs: pot, work, shares per provider
``GET /verify``                     the last verification report, if one ran (never runs one)
``GET /tx/{tx_hash}``               an indexed transaction and the events it emitted
``GET /static/{name}``              the stylesheet
==================================  ===================================================================

Everything comes from :mod:`proxima.audit.queries` over the service's ledger at its checkpoint, so the pages
show exactly what the JSON API (:mod:`proxima.audit.api`) returns. Amounts are shown in ETH, with the exact
amount (ETH and wei) in the element's ``title``. Every address, job and transaction links to its page; links
are built with ``request.url_for`` so the router can be mounted under any prefix (the gateway mounts it at
``/explorer``).

Errors are HTML pages with the right status, never exceptions that reach the app's (JSON) error handlers: a
malformed parameter is 400 naming it, an unknown account, job or transaction 404, a service not ready yet
or an empty index 503.

Mounting: ``app.include_router(explorer_router(service))``, or ``explorer_router(lambda: ...)`` with a
zero-argument callable returning the service (None while it is not ready) when the app builds it later.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any, Final
from urllib.parse import urlencode

from eth_utils.address import is_checksum_address, to_checksum_address
from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response
from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape
from markupsafe import Markup

from proxima.audit import queries
from proxima.audit.calldata import Domains, decode_call, recover, typed_digest
from proxima.audit.errors import AuditError
from proxima.audit.explorer import charts, formats, geo
from proxima.audit.service import LOCATION_SOURCE, AuditService, EmptyIndexError, NoRpcError
from proxima.sdk.eip712 import Verdict

__all__ = [
    "MAX_PAGE",
    "BadParameterError",
    "ExplorerError",
    "InternalError",
    "NotFoundError",
    "ServiceSource",
    "UnavailableError",
    "explorer_router",
]

log = logging.getLogger(__name__)

MAX_PAGE: Final = 500
"""Most rows one page shows."""
DEFAULT_PAGE: Final = 50
RECENT: Final = 100
"""Most jobs and attestations an account's page lists (newest first; the jobs page has them all)."""
_MAP_ROWS: Final = 100_000
_STATIC: Final = {"explorer.css": "text/css; charset=utf-8"}
_HEX32: Final = re.compile(r"^0x[0-9a-fA-F]{64}$")
_ADDRESS: Final = re.compile(r"^0x[0-9a-fA-F]{40}$")
_COUNTRY: Final = re.compile(r"^[A-Z]{2}$")
_BUCKETS: Final = (60, 300, 900, 3_600, 6 * 3_600, 86_400, 7 * 86_400, 30 * 86_400)
_PATH_PARAMS: Final = {
    "explorer_static": frozenset({"name"}),
    "explorer_account": frozenset({"address"}),
    "explorer_job": frozenset({"job_id"}),
    "explorer_tx": frozenset({"tx_hash"}),
}
"""Path parameters of the routes that have some (every other keyword given to ``link`` is a query)."""
_NAV: Final = (
    ("explorer_overview", "Overview"),
    ("explorer_providers", "Providers"),
    ("explorer_jobs", "Jobs"),
    ("explorer_slashes", "Slashes"),
    ("explorer_rewards", "Rewards"),
    ("explorer_verify", "Verify"),
)

ServiceSource = AuditService | Callable[[], AuditService | None]
"""A service, or a zero-argument callable returning it (None: not ready yet, 503)."""


class ExplorerError(AuditError):
    """A page cannot be shown; ``status`` is the HTTP status of the error page."""

    status = 500
    title = "Error"


class BadParameterError(ExplorerError, ValueError):
    """A query or path parameter is malformed (400).

    Args:
        param: The parameter's name.
        value: What was given.
        expected: What it should be.
    """

    status = 400
    title = "Bad request"

    def __init__(self, param: str, value: str, expected: str) -> None:
        self.param = param
        self.value = value
        self.expected = expected
        shown = value if len(value) <= 80 else value[:77] + "..."
        super().__init__(f"parameter {param}={shown!r} is not {expected}")


class NotFoundError(ExplorerError, LookupError):
    """The index has no such account, job or transaction (404).

    Args:
        what: The kind of thing (``"account"``, ``"escrow job"``, ``"transaction"``).
        key: Its address, id or hash.
    """

    status = 404
    title = "Not found"

    def __init__(self, what: str, key: str) -> None:
        self.what = what
        self.key = key
        super().__init__(f"no {what} {key} in the index")


class UnavailableError(ExplorerError):
    """The auditor cannot answer yet (503): no service, or nothing indexed.

    Args:
        reason: Why.
    """

    status = 503
    title = "Not ready"

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


class InternalError(ExplorerError):
    """Something failed while building the page (500); the details are in the log, not on the page."""

    status = 500
    title = "Internal error"

    def __init__(self) -> None:
        super().__init__("the page could not be built; the error was logged")


# --- parameters ----------------------------------------------------------------------------------------


def _int_param(request: Request, name: str, default: int, low: int, high: int) -> int:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    if not raw.isdigit() or not low <= int(raw) <= high:
        raise BadParameterError(name, raw, f"a whole number from {low} to {high}")
    return int(raw)


def _choice_param(request: Request, name: str, default: str | None, choices: Sequence[str]) -> str | None:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    if raw not in choices:
        raise BadParameterError(name, raw, "one of " + ", ".join(choices))
    return raw


def _address(value: str, param: str) -> str:
    if not _ADDRESS.match(value):
        raise BadParameterError(param, value, "an address (0x and 40 hex digits)")
    body = value[2:]
    if body != body.lower() and body != body.upper() and not is_checksum_address(value):
        raise BadParameterError(param, value, "an address with a valid EIP-55 checksum")
    return str(to_checksum_address(value))


def _address_param(request: Request, name: str) -> str | None:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return None
    return _address(raw, name)


def _hex32(value: str, param: str) -> bytes:
    if not _HEX32.match(value):
        raise BadParameterError(param, value, "0x and 64 hex digits")
    return bytes.fromhex(value[2:])


def _literal_values(alias: Any) -> tuple[str, ...]:
    """The values of a ``Literal[...]`` alias (queries' sort keys, statuses, kinds)."""
    values = getattr(alias, "__args__", ())
    return tuple(str(v) for v in values)


# --- rendering -----------------------------------------------------------------------------------------


@cache
def _environment() -> Environment:
    env = Environment(
        loader=PackageLoader("proxima.audit.explorer", "templates"),
        autoescape=select_autoescape(["html"], default=True),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["eth"] = formats.eth_html
    env.filters["eth_exact"] = formats.eth_exact
    env.filters["hex"] = formats.hex_of
    env.filters["short"] = formats.short_hex
    env.filters["utc"] = formats.utc_time
    env.filters["pct"] = formats.percent
    env.filters["flops"] = _flops
    env.filters["bytes_s"] = _bytes_per_s
    return env


@cache
def _static(name: str) -> bytes:
    return resources.files("proxima.audit.explorer").joinpath(f"static/{name}").read_bytes()


@dataclass(frozen=True)
class _Page:
    template: str
    context: Mapping[str, Any]


class _Renderer:
    """Turns a page (or an error) into an HTML response for one request."""

    def __init__(self, request: Request, checkpoint: Any = None) -> None:
        self.request = request
        self.checkpoint = checkpoint

    def link(self, route: str, /, **params: Any) -> str:
        """The path of the route named ``route``; path parameters by name, other non-None ones as a query."""
        path_names = _path_params(route)
        url = self.request.url_for(route, **{k: str(v) for k, v in params.items() if k in path_names})
        path = url.path  # prefix- and root_path-aware, without scheme and host (works behind proxies)
        query = {k: v for k, v in params.items() if k not in path_names and v is not None}
        return path + ("?" + urlencode(query) if query else "")

    def here_with(self, **changes: Any) -> str:
        """The current page's path with some query parameters changed (None removes one)."""
        query = dict(self.request.query_params)
        for key, value in changes.items():
            if value is None:
                query.pop(key, None)
            else:
                query[key] = str(value)
        path = self.request.url.path
        return path + ("?" + urlencode(sorted(query.items())) if query else "")

    def render(self, page: _Page, here: str, status: int = 200) -> HTMLResponse:
        template = _environment().get_template(page.template)
        html = template.render(
            link=self.link,
            params=self.here_with,
            nav=_NAV,
            here=here,
            checkpoint=self.checkpoint,
            **page.context,
        )
        return HTMLResponse(html, status_code=status)

    def error(self, err: ExplorerError, here: str) -> HTMLResponse:
        page = _Page("error.html", {"title": f"{err.status} {err.title}", "message": str(err)})
        return self.render(page, here, err.status)


def _path_params(route: str) -> frozenset[str]:
    return _PATH_PARAMS.get(route, frozenset())


def _bucket_for(span_s: int) -> int:
    """A bucket width giving at most ~48 points over ``span_s``."""
    for width in _BUCKETS:
        if span_s / width <= 48:
            return width
    return _BUCKETS[-1]


def _page_links(total: int, limit: int, offset: int) -> dict[str, Any]:
    return {
        "total": total,
        "limit": limit,
        "offset": offset,
        "first": min(offset + 1, total),
        "last": min(offset + limit, total),
        "prev": None if offset == 0 else max(offset - limit, 0),
        "next": offset + limit if offset + limit < total else None,
    }


# --- the router ----------------------------------------------------------------------------------------


def explorer_router(service: ServiceSource) -> APIRouter:
    """The explorer's HTML pages (see the module docstring for the routes).

    Args:
        service: The service, or a callable returning it per request (None: not ready, 503).

    Returns:
        A router to include in any FastAPI app, at its root or under a prefix.
    """
    router = APIRouter(include_in_schema=False)

    def current() -> AuditService:
        try:
            resolved = service if isinstance(service, AuditService) else service()
        except Exception as err:  # the provider of the service failed: not ready, say why
            raise UnavailableError(f"the auditor is not ready: {err}") from err
        if resolved is None:
            raise UnavailableError("the auditor is starting; retry in a moment")
        return resolved

    def serve(request: Request, here: str, build: Callable[[AuditService, Any], _Page]) -> HTMLResponse:
        renderer = _Renderer(request)
        try:
            svc = current()
            try:
                ledger = svc.ledger()
            except EmptyIndexError as err:
                raise UnavailableError(f"{err}") from err
            except NoRpcError as err:
                raise UnavailableError(f"{err}") from err
            renderer.checkpoint = svc.checkpoint()
            page = build(svc, ledger)
            escrow_jobs = frozenset("0x" + bytes(k).hex() for k in ledger.jobs)
            context = {"signers": {}, "escrow_jobs": escrow_jobs, "arg": _event_arg(renderer, escrow_jobs)}
            context.update(page.context)
            return renderer.render(_Page(page.template, context), here)
        except ExplorerError as err:
            log.info(
                "explorer page refused",
                extra={"path": request.url.path, "status": err.status, "error": str(err)},
            )
            return renderer.error(err, here)
        except Exception:  # a bug: an HTML error page, the details only in the log
            log.exception("explorer page failed", extra={"path": request.url.path})
            return renderer.error(InternalError(), here)

    @router.get("/static/{name}", name="explorer_static")
    def static(name: str) -> Response:
        media = _STATIC.get(name)
        if media is None:
            return Response(f"no static file {name}", status_code=404, media_type="text/plain")
        return Response(_static(name), media_type=media, headers={"Cache-Control": "public, max-age=3600"})

    @router.get("/", name="explorer_overview", response_class=HTMLResponse)
    def overview(request: Request) -> HTMLResponse:
        def build(svc: AuditService, ledger: Any) -> _Page:
            report = svc.last_report
            summary = queries.summary(
                ledger,
                svc.locations(),
                verified_block=None if report is None else report.block_number,
                verified_ok=None if report is None else report.ok,
            )
            bucket = _int_param(request, "bucket", 0, 0, 366 * 86_400)
            if 0 < bucket < 60:
                raise BadParameterError("bucket", str(bucket), "0 (automatic) or at least 60 seconds")
            if bucket == 0:
                daily = queries.series(ledger, 86_400).points
                first = min((int(p.start) for p in daily), default=ledger.block_timestamp)
                bucket = _bucket_for(max(ledger.block_timestamp - first, 1))
            points = queries.series(ledger, bucket).points
            return _Page(
                "overview.html",
                {
                    "title": "Overview",
                    "summary": summary,
                    "charts": _overview_charts(points),
                    "bucket_text": _bucket_text(bucket),
                },
            )

        return serve(request, "explorer_overview", build)

    @router.get("/providers", name="explorer_providers", response_class=HTMLResponse)
    def providers(request: Request) -> HTMLResponse:
        def build(svc: AuditService, ledger: Any) -> _Page:
            sort = _choice_param(request, "sort", "stake", _literal_values(queries.ProviderSort)) or "stake"
            order = _choice_param(request, "order", "desc", ("asc", "desc"))
            role = _choice_param(request, "role", None, ("provider", "verifier"))
            country = request.query_params.get("country") or None
            if country is not None and not _COUNTRY.match(country):
                raise BadParameterError("country", country, "an ISO 3166-1 alpha-2 code in capitals (DE)")
            limit = _int_param(request, "limit", DEFAULT_PAGE, 1, MAX_PAGE)
            offset = _int_param(request, "offset", 0, 0, 10**9)
            locations = svc.locations()
            page = queries.providers(
                ledger,
                locations,
                role=role,
                country=country,
                sort=sort,
                descending=order == "desc",
                limit=limit,
                offset=offset,
            )
            everyone = queries.providers(ledger, locations, role="provider", limit=_MAP_ROWS, offset=0)
            spots, unplaced = _map_spots(everyone.data, _Renderer(request))
            return _Page(
                "providers.html",
                {
                    "title": "Providers",
                    "page": page,
                    "rows": page.data,
                    "pager": _page_links(page.total, limit, offset),
                    "sort": sort,
                    "order": order,
                    "role": role,
                    "country": country,
                    "map": geo.world_map(spots, label="Providers by claimed country, dot area by stake"),
                    "placed": sum(s.count for s in spots),
                    "unplaced": unplaced,
                    "source": _location_source(),
                },
            )

        return serve(request, "explorer_providers", build)

    @router.get("/providers/{address}", name="explorer_account", response_class=HTMLResponse)
    def account(request: Request, address: str) -> HTMLResponse:
        def build(svc: AuditService, ledger: Any) -> _Page:
            checked = _address(address, "address")
            detail = queries.provider_detail(ledger, checked, svc.locations())
            client_jobs = queries.jobs(ledger, client=checked, limit=MAX_PAGE, offset=0)
            found = [s for s in _all_slashes(ledger) if s.finder == checked]
            if detail is None and client_jobs.total == 0 and not found:
                raise NotFoundError("account", checked)
            return _Page(
                "account.html",
                {
                    "title": f"Account {checked}",
                    "address": checked,
                    "detail": detail,
                    "client_jobs": client_jobs,
                    "found": found,
                    "recent": RECENT,
                    "signers": _verdict_signers(svc, [*(detail.slashes if detail else ()), *found]),
                    "source": _location_source(),
                },
            )

        return serve(request, "explorer_providers", build)

    @router.get("/jobs", name="explorer_jobs", response_class=HTMLResponse)
    def jobs(request: Request) -> HTMLResponse:
        def build(svc: AuditService, ledger: Any) -> _Page:
            provider = _address_param(request, "provider")
            client = _address_param(request, "client")
            status = _choice_param(request, "status", None, _literal_values(queries.JobStatusName))
            order = _choice_param(request, "order", "desc", ("asc", "desc"))
            limit = _int_param(request, "limit", DEFAULT_PAGE, 1, MAX_PAGE)
            offset = _int_param(request, "offset", 0, 0, 10**9)
            page = queries.jobs(
                ledger,
                provider=provider,
                client=client,
                status=status,
                descending=order == "desc",
                limit=limit,
                offset=offset,
            )
            return _Page(
                "jobs.html",
                {
                    "title": "Jobs",
                    "rows": page.data,
                    "pager": _page_links(page.total, limit, offset),
                    "statuses": _literal_values(queries.JobStatusName),
                    "status": status,
                    "provider": provider,
                    "client": client,
                    "order": order,
                },
            )

        return serve(request, "explorer_jobs", build)

    @router.get("/jobs/{job_id}", name="explorer_job", response_class=HTMLResponse)
    def job(request: Request, job_id: str) -> HTMLResponse:
        def build(svc: AuditService, ledger: Any) -> _Page:
            key = _hex32(job_id, "job_id")
            row = queries.job_detail(ledger, key)
            if row is None:
                raise NotFoundError("escrow job", "0x" + key.hex())
            related = [s for s in _all_slashes(ledger) if s.job_id == "0x" + key.hex()]
            return _Page(
                "job.html",
                {
                    "title": f"Job 0x{key.hex()}",
                    "job": row,
                    "slashes": related,
                    "signers": _verdict_signers(svc, related),
                },
            )

        return serve(request, "explorer_jobs", build)

    @router.get("/slashes", name="explorer_slashes", response_class=HTMLResponse)
    def slashes(request: Request) -> HTMLResponse:
        def build(svc: AuditService, ledger: Any) -> _Page:
            provider = _address_param(request, "provider")
            kind = _choice_param(request, "kind", None, _literal_values(queries.SlashKind))
            order = _choice_param(request, "order", "desc", ("asc", "desc"))
            limit = _int_param(request, "limit", DEFAULT_PAGE, 1, MAX_PAGE)
            offset = _int_param(request, "offset", 0, 0, 10**9)
            page = queries.slashes(
                ledger, provider=provider, kind=kind, descending=order == "desc", limit=limit, offset=offset
            )
            return _Page(
                "slashes.html",
                {
                    "title": "Slashes",
                    "rows": page.data,
                    "pager": _page_links(page.total, limit, offset),
                    "kinds": _literal_values(queries.SlashKind),
                    "signers": _verdict_signers(svc, page.data),
                    "kind": kind,
                    "provider": provider,
                    "order": order,
                },
            )

        return serve(request, "explorer_slashes", build)

    @router.get("/rewards", name="explorer_rewards", response_class=HTMLResponse)
    def rewards(request: Request) -> HTMLResponse:
        def build(svc: AuditService, ledger: Any) -> _Page:
            order = _choice_param(request, "order", "desc", ("asc", "desc"))
            limit = _int_param(request, "limit", DEFAULT_PAGE, 1, MAX_PAGE)
            offset = _int_param(request, "offset", 0, 0, 10**9)
            page = queries.reward_epochs(ledger, descending=order == "desc", limit=limit, offset=offset)
            return _Page(
                "rewards.html",
                {
                    "title": "Reward epochs",
                    "rows": page.data,
                    "pager": _page_links(page.total, limit, offset),
                    "shares": _epoch_shares(ledger),
                },
            )

        return serve(request, "explorer_rewards", build)

    @router.get("/verify", name="explorer_verify", response_class=HTMLResponse)
    def verify(request: Request) -> HTMLResponse:
        def build(svc: AuditService, ledger: Any) -> _Page:
            return _Page("verify.html", {"title": "Verification", "report": svc.last_report})

        return serve(request, "explorer_verify", build)

    @router.get("/tx/{tx_hash}", name="explorer_tx", response_class=HTMLResponse)
    def transaction(request: Request, tx_hash: str) -> HTMLResponse:
        def build(svc: AuditService, ledger: Any) -> _Page:
            key = _hex32(tx_hash, "tx_hash")
            with svc.locked() as store:
                tx = store.transaction(key)
                if tx is None:
                    raise NotFoundError("transaction", "0x" + key.hex())
                events = [
                    e
                    for e in store.events(from_block=tx.block_number, to_block=tx.block_number)
                    if e.tx_hash == key
                ]
                block = store.block(tx.block_number)
            names = {e.address: e.contract for e in events}
            return _Page(
                "tx.html",
                {
                    "title": f"Transaction 0x{key.hex()}",
                    "tx": tx,
                    "events": events,
                    "block": block,
                    "contract": names.get(tx.to or ""),
                },
            )

        return serve(request, "explorer_overview", build)

    return router


# --- page helpers --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Spot(geo.MapSpot):
    count: int = 0


def _location_source() -> str:
    return LOCATION_SOURCE


def _map_spots(rows: Sequence[Any], renderer: _Renderer) -> tuple[list[_Spot], list[Any]]:
    """One spot per claimed country (area by total stake) and the providers without a mappable location."""
    by_country: dict[str, list[Any]] = {}
    unplaced: list[Any] = []
    for row in rows:
        country = getattr(row, "country", None)
        if country and geo.centroid(country) is not None:
            by_country.setdefault(country.upper(), []).append(row)
        else:
            unplaced.append(row)
    spots = []
    for country in sorted(by_country):
        members = sorted(by_country[country], key=lambda r: r.address)
        place = geo.centroid(country)
        assert place is not None  # filtered above
        stake = sum(int(r.stake_wei) for r in members)
        names = "; ".join(f"{r.address} ({formats.eth_short(int(r.stake_wei))} ETH)" for r in members)
        title = f"{place.name}: {len(members)} provider(s), {formats.eth_short(stake)} ETH staked: {names}"
        href = (
            renderer.link("explorer_account", address=members[0].address)
            if len(members) == 1
            else renderer.link("explorer_providers", country=country)
        )
        spots.append(_Spot(country=country, weight=stake, title=title, href=href, count=len(members)))
    return spots, unplaced


@dataclass(frozen=True)
class _Share:
    provider: str
    work: int
    reward_wei: int


def _epoch_shares(ledger: Any) -> dict[int, list[_Share]]:
    """Each epoch's work and reward (the ledger's ``pot * work // total_work``) per provider, by address."""
    shares: dict[int, list[_Share]] = {}
    for number in sorted(ledger.epochs):
        epoch = ledger.epochs[number]
        for provider in sorted(epoch.work, key=str.lower):
            work = int(epoch.work[provider])
            if work:
                reward = int(epoch.rewards.get(provider, 0))
                shares.setdefault(number, []).append(_Share(provider, work, reward))
    return shares


def _verdict_signers(svc: AuditService, slashes: Sequence[Any]) -> dict[str, tuple[str, ...]]:
    """Verifiers whose verdict signatures a slash's transaction carried, recovered from its calldata.

    Disputes (``JobEscrow.resolveDispute``) and judged faults (``FaultProofs.proveCanaryFault`` /
    ``proveInvalidResult``) carry ``Verdict`` signatures; other slashes have none (absent from the result).
    """
    names = {str(to_checksum_address(a)): n for n, a in svc.deployment.contracts.items()}
    domains = Domains.of(svc.deployment, svc.deployment.chain_id)
    found: dict[str, tuple[str, ...]] = {}
    for slash in slashes:
        if slash.tx_hash in found or not slash.tx_hash:
            continue
        with svc.locked() as store:
            tx = store.transaction(bytes.fromhex(slash.tx_hash[2:]))
        contract = names.get(str(tx.to)) if tx is not None and tx.to else None
        call = decode_call(contract, tx.input) if tx is not None and contract else None
        if call is None:
            continue
        if call.function == "resolveDispute":
            job_id, result_hash, valid = call.args["verdict"]
            signatures, domain = call.args["signatures"], "JobEscrow"
        elif "verdictSignatures" in call.args:
            job_id, result_hash, valid = call.args["receipt"][0], call.args["receipt"][3], False
            signatures, domain = call.args["verdictSignatures"], "FaultProofs"
        else:
            continue
        digest = typed_digest(domains.separators[domain], Verdict, (job_id, result_hash, valid))
        recovered = (recover(digest, bytes(signature)) for signature in signatures)
        found[slash.tx_hash] = tuple(s for s in recovered if s is not None)
    return found


def _all_slashes(ledger: Any) -> list[Any]:
    return list(queries.slash_rows(ledger))


def _bucket_text(seconds: int) -> str:
    for unit, size in (("day", 86_400), ("hour", 3_600), ("minute", 60)):
        if seconds % size == 0:
            count = seconds // size
            return f"{count} {unit}" + ("s" if count != 1 else "")
    return f"{seconds} seconds"


def _overview_charts(points: Sequence[Any]) -> list[tuple[str, Any]]:
    xs = [int(p.start) for p in points]

    def wei_axis(value: float) -> str:
        return formats.eth_short(int(value), 4)

    def wei_full(value: float) -> str:
        return f"{formats.eth_exact(int(value))} ETH ({int(value):,} wei)"

    return [
        (
            "Escrow jobs opened",
            charts.bar_chart(
                "Escrow jobs opened per bucket", xs, [p.jobs_opened for p in points], integer=True
            ),
        ),
        (
            "Volume paid (ETH)",
            charts.bar_chart(
                "Volume paid per bucket, ETH", xs, [p.volume_wei for p in points], fmt=wei_axis, full=wei_full
            ),
        ),
        (
            "Total stake (ETH)",
            charts.line_chart(
                "Total stake at the end of each bucket, ETH",
                xs,
                [charts.ChartSeries("stake", [p.total_stake_wei for p in points])],
                fmt=wei_axis,
                full=wei_full,
            ),
        ),
        ("Slashes", charts.bar_chart("Slashes per bucket", xs, [p.slashes for p in points], integer=True)),
    ]


_AMOUNT_KEYS: Final = re.compile(
    r"(amount|stake|payout|fee|refund|price|bond|reward|balance|pot|pool|treasury|value|paid|deposit|"
    r"unbonding|slashed|redeemed|credit)",
    re.IGNORECASE,
)
_TIME_KEYS: Final = re.compile(r"(deadline|_at$|At$|ready|time)", re.IGNORECASE)


def _event_arg(renderer: _Renderer, escrow_jobs: frozenset[str]) -> Callable[[str, Any], Markup]:
    """Render one decoded event argument: addresses and escrow job ids as links, amounts in wei and ETH,
    times as UTC, short ASCII tags (a slash's ``reason``) as text."""

    def arg(key: str, value: Any) -> Markup:
        if isinstance(value, str) and value.isdigit():  # evidence carries numbers as text
            value = int(value)
        if isinstance(value, int) and _TIME_KEYS.search(key) and 10**9 <= value < 10**11:
            return Markup("{} ({})").format(formats.utc_time(value), value)
        if isinstance(value, str) and _ADDRESS.match(value):
            href = renderer.link("explorer_account", address=value)
            return Markup('<a class="hex" href="{}">{}</a>').format(href, value)
        if isinstance(value, bytes | bytearray):
            text = formats.hex_of(bytes(value))
            tag = bytes(value).rstrip(b"\0")
            if key == "reason" and tag and tag.isascii() and tag.decode().isprintable():
                return Markup("{} ({})").format(tag.decode(), text)
            if key.lower() == "jobid" and text in escrow_jobs:
                return Markup('<a class="hex" href="{}">{}</a>').format(
                    renderer.link("explorer_job", job_id=text), text
                )
            return Markup("{}").format(text)
        if isinstance(value, int) and not isinstance(value, bool) and _AMOUNT_KEYS.search(key):
            return Markup("{} wei ({})").format(f"{value:,}", formats.eth_html(value))
        return Markup("{}").format(value)

    return arg


def _flops(value: float | int | None) -> str:
    if value is None:
        return formats.DASH
    number = float(value)
    for unit, size in (("PFLOP/s", 1e15), ("TFLOP/s", 1e12), ("GFLOP/s", 1e9), ("MFLOP/s", 1e6)):
        if number >= size:
            return f"{number / size:,.2f} {unit}"
    return f"{number:,.0f} FLOP/s"


def _bytes_per_s(value: float | int | None) -> str:
    if value is None:
        return formats.DASH
    number = float(value)
    for unit, size in (("TB/s", 1e12), ("GB/s", 1e9), ("MB/s", 1e6), ("kB/s", 1e3)):
        if number >= size:
            return f"{number / size:,.2f} {unit}"
    return f"{number:,.0f} B/s"
