"""``GET /v1/offers``: the live offers the gateway sees, filtered by workload, model, region or country."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from proxima.marketplace.gateway.routes import AUTH_RESPONSES, CurrentClient, Market, error_responses
from proxima.marketplace.gateway.schemas import OfferList, offer_public

__all__ = ["router"]

router = APIRouter(prefix="/v1/offers", tags=["market"])


@router.get(
    "", response_model=OfferList, responses={**AUTH_RESPONSES, **error_responses(422)}, summary="Live offers"
)
async def list_offers(
    client: CurrentClient,
    market: Market,
    workload: Annotated[str | None, Query(pattern=r"^[a-z0-9][a-z0-9._-]{0,31}$")] = None,
    model: Annotated[str | None, Query(pattern=r"^[A-Za-z0-9][A-Za-z0-9._/-]{0,127}$")] = None,
    region: Annotated[str | None, Query(pattern=r"^[a-z0-9][a-z0-9-]{0,31}$")] = None,
    country: Annotated[str | None, Query(pattern=r"^[A-Z]{2}$")] = None,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 1_000,
) -> OfferList:
    """Live, validated offers (signed by staked providers), by provider address.

    ``workload`` keeps offers serving it (and ``model``, for workloads with models); ``region`` and
    ``country`` keep offers from there.
    """
    selected = []
    for signed in sorted(market.offers(), key=lambda s: s.offer.provider):
        offer = signed.offer
        if region is not None and offer.region != region:
            continue
        if country is not None and offer.country != country:
            continue
        if workload is not None or model is not None:
            served = [w for w in offer.workloads if workload is None or w.name == workload]
            if model is not None:
                served = [w for w in served if model in w.models]
            if not served:
                continue
        selected.append(offer_public(signed))
        if len(selected) >= limit:
            break
    return OfferList(data=selected)
