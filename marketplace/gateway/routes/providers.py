"""``GET /v1/providers/{address}``: a provider's offer, on-chain record, and the estimates matching uses."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path

from proxima.marketplace.gateway.accounts import checksum_address
from proxima.marketplace.gateway.routes import AUTH_RESPONSES, CurrentClient, Market, error_responses
from proxima.marketplace.gateway.schemas import (
    ApiError,
    ChainRecordPublic,
    GatewayRecordPublic,
    ProviderPublic,
    offer_public,
)
from proxima.marketplace.matching.reliability import reliability, verified_throughput

__all__ = ["router"]

router = APIRouter(prefix="/v1/providers", tags=["market"])


@router.get(
    "/{address}",
    response_model=ProviderPublic,
    responses={**AUTH_RESPONSES, **error_responses(404, 422)},
    summary="A provider",
)
async def get_provider(
    address: Annotated[str, Path(pattern=r"^0x[0-9a-fA-F]{40}$", description="The provider's address.")],
    client: CurrentClient,
    market: Market,
) -> ProviderPublic:
    """The provider's live offer, its on-chain record (stake, completed and failed jobs, disputes, slashes,
    attested and verified throughput), the reliability and throughput the matching engine plans with, and
    this gateway's own experience of it. 404 when the gateway knows nothing of it."""
    provider = checksum_address(address.lower())  # any case: a lookup needs no checksum
    signed = next((s for s in market.offers() if s.offer.provider == provider), None)
    stats = market.provider_stats(provider)
    if signed is None and stats is None:
        raise ApiError(404, "not_found", f"no offer and no record of provider {provider}", param="address")
    chain = None
    if stats is not None:
        chain = ChainRecordPublic(
            stake_wei=stats.stake_wei,
            jobs_completed=stats.jobs_completed,
            jobs_failed=stats.jobs_failed,
            disputes_lost=stats.disputes_lost,
            total_slashed_wei=stats.total_slashed_wei,
            attested_flops=stats.attested_flops,
            verified_flops=stats.verified_flops,
            report_passes=stats.report_passes,
            report_failures=stats.report_failures,
        )
    throughput = None
    if signed is not None and stats is not None:
        throughput = verified_throughput(signed.offer.measured.gemm_flops, stats)
    rtt = market.measured_rtt(provider)
    return ProviderPublic(
        address=provider,
        offer=None if signed is None else offer_public(signed),
        chain=chain,
        reliability=None if stats is None else reliability(stats),
        verified_throughput_flops=throughput,
        gateway=GatewayRecordPublic(
            observed_successes=0 if stats is None else stats.observed_successes,
            observed_failures=0 if stats is None else stats.observed_failures,
            excluded=provider in market.excluded(),
            measured_rtt_ms=None if rtt is None else rtt * 1000.0,
        ),
    )
