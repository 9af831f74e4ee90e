"""Who is calling: API keys and signed requests.

A request authenticates in one of two ways:

* ``Authorization: Bearer pxk_...``: an API key bound to a client account (``proxima-gateway add-client``).
* Signed with the client's own key, three headers:

  - ``X-Proxima-Address``: the client's address;
  - ``X-Proxima-Timestamp``: Unix seconds (up to 3 decimals), within :data:`MAX_SKEW_SECONDS` of the
    gateway's clock;
  - ``X-Proxima-Signature``: ``0x`` + 65-byte EIP-191 ``personal_sign`` signature of the text::

        PROXIMA-REQUEST-V1
        {METHOD}
        {path?query}
        {timestamp}
        {sha256(body) as lowercase hex}

    where ``path?query`` is the request target exactly as sent (``/v1/jobs?limit=5``), ``timestamp`` the
    header's text and ``body`` the raw request body (empty for GET). A signature is accepted once: a replay
    inside the time window is refused. Two identical requests therefore need different timestamps.

:func:`sign_request_headers` makes the three headers. Any failure is a 401 whose message says what is wrong;
an address or key without a client account is refused like a bad key.
"""

from __future__ import annotations

import hashlib
import logging
import re
import time
from dataclasses import dataclass
from typing import Final, Literal

from eth_account import Account
from eth_account.messages import encode_defunct
from eth_account.signers.local import LocalAccount
from starlette.requests import HTTPConnection

from proxima.marketplace.gateway.accounts import Accounts, checksum_address
from proxima.marketplace.gateway.schemas import ApiError
from proxima.sdk.types import Address

__all__ = [
    "ADDRESS_HEADER",
    "MAX_SKEW_SECONDS",
    "REQUEST_SIGNING_VERSION",
    "SIGNATURE_HEADER",
    "TIMESTAMP_HEADER",
    "AuthenticatedClient",
    "AuthenticationError",
    "authenticate_connection",
    "request_message",
    "request_target",
    "sign_request_headers",
]

log = logging.getLogger(__name__)

REQUEST_SIGNING_VERSION: Final = "PROXIMA-REQUEST-V1"
"""First line of every signed request text."""
ADDRESS_HEADER: Final = "X-Proxima-Address"
TIMESTAMP_HEADER: Final = "X-Proxima-Timestamp"
SIGNATURE_HEADER: Final = "X-Proxima-Signature"
MAX_SKEW_SECONDS: Final = 60.0
"""A signed request's timestamp must be within this many seconds of the gateway's clock."""

_TIMESTAMP = re.compile(r"^[0-9]{1,12}(\.[0-9]{1,3})?$")
_SIGNATURE = re.compile(r"^0x[0-9a-fA-F]{130}$")
_METHOD = re.compile(r"^[A-Z]{1,16}$")


class AuthenticationError(ApiError):
    """The request carries no valid credentials (HTTP 401).

    Args:
        message: What is wrong and what to send instead.
    """

    def __init__(self, message: str) -> None:
        super().__init__(
            401, "unauthenticated", message, headers={"WWW-Authenticate": 'Bearer realm="proxima"'}
        )


@dataclass(frozen=True, slots=True)
class AuthenticatedClient:
    """The client a request comes from.

    Attributes:
        address: Its account's address.
        method: How it authenticated.
    """

    address: Address
    method: Literal["api_key", "signature"]


def request_message(method: str, target: str, timestamp: str, body: bytes) -> str:
    """The text a signed request signs (see the module docs).

    Args:
        method: HTTP method, uppercase.
        target: Path and query as sent (``/v1/jobs?limit=5``).
        timestamp: The ``X-Proxima-Timestamp`` header's text.
        body: The raw request body.
    """
    digest = hashlib.sha256(body).hexdigest()
    return f"{REQUEST_SIGNING_VERSION}\n{method}\n{target}\n{timestamp}\n{digest}"


def sign_request_headers(
    account: LocalAccount, method: str, url_path: str, body: bytes = b"", *, timestamp: float | None = None
) -> dict[str, str]:
    """The three headers that authenticate a request as ``account``.

    Args:
        account: The client's key (``eth_account.Account.from_key(...)``).
        method: HTTP method (``"POST"``).
        url_path: Path and query exactly as they will be sent (``"/v1/jobs?limit=5"``).
        body: The exact body bytes that will be sent (``b""`` for GET).
        timestamp: Unix seconds to sign (now when omitted).

    Returns:
        ``{"X-Proxima-Address": ..., "X-Proxima-Timestamp": ..., "X-Proxima-Signature": ...}``.
    """
    stamp = f"{time.time() if timestamp is None else timestamp:.3f}"
    message = request_message(method.upper(), url_path, stamp, body)
    signed = account.sign_message(encode_defunct(text=message))
    return {
        ADDRESS_HEADER: account.address,
        TIMESTAMP_HEADER: stamp,
        SIGNATURE_HEADER: "0x" + bytes(signed.signature).hex(),
    }


def request_target(connection: HTTPConnection) -> str:
    """``path?query`` of a request as the client sent it (the raw, still percent-encoded path)."""
    raw = connection.scope.get("raw_path")
    path = raw.decode("latin-1") if isinstance(raw, bytes | bytearray) else connection.url.path
    query = connection.scope.get("query_string", b"")
    if isinstance(query, bytes | bytearray) and query:
        return f"{path}?{query.decode('latin-1')}"
    return path


def authenticate_connection(
    connection: HTTPConnection,
    body: bytes,
    accounts: Accounts,
    *,
    now: float | None = None,
    method: str | None = None,
) -> AuthenticatedClient:
    """Check a request's credentials.

    Args:
        connection: The HTTP request or websocket.
        body: The raw request body (``b""`` for GET and websockets).
        accounts: The client accounts (API keys, clients, used signatures).
        now: The gateway's Unix time (default: now).
        method: The HTTP method signed (default: the request's; ``GET`` for websockets).

    Returns:
        The client.

    Raises:
        AuthenticationError: Missing, malformed, expired, replayed or unknown credentials.
    """
    headers = connection.headers
    authorization = headers.get("authorization")
    signed = [name for name in (ADDRESS_HEADER, TIMESTAMP_HEADER, SIGNATURE_HEADER) if name in headers]
    if authorization is not None and signed:
        raise AuthenticationError("send either an Authorization header or the X-Proxima-* signature headers")
    if authorization is not None:
        return _api_key_client(authorization, accounts)
    if signed:
        if method is None:
            method = connection.scope.get("method", "GET")
        return _signed_client(connection, body, accounts, str(method), time.time() if now is None else now)
    raise AuthenticationError(
        "no credentials: send 'Authorization: Bearer <api key>' or sign the request "
        f"({ADDRESS_HEADER}, {TIMESTAMP_HEADER}, {SIGNATURE_HEADER})"
    )


def _api_key_client(authorization: str, accounts: Accounts) -> AuthenticatedClient:
    scheme, _, key = authorization.strip().partition(" ")
    if scheme.lower() != "bearer" or not key.strip():
        raise AuthenticationError("the Authorization header must be 'Bearer <api key>'")
    address = accounts.client_for_key(key.strip())
    if address is None:
        raise AuthenticationError("unknown or revoked API key")
    return AuthenticatedClient(address, "api_key")


def _signed_client(
    connection: HTTPConnection, body: bytes, accounts: Accounts, method: str, now: float
) -> AuthenticatedClient:
    headers = connection.headers
    missing = [name for name in (ADDRESS_HEADER, TIMESTAMP_HEADER, SIGNATURE_HEADER) if name not in headers]
    if missing:
        raise AuthenticationError(f"a signed request needs {', '.join(missing)} too")
    try:
        address = checksum_address(headers[ADDRESS_HEADER])
    except ValueError as err:
        raise AuthenticationError(f"{ADDRESS_HEADER}: {err}") from err
    stamp = headers[TIMESTAMP_HEADER]
    if not _TIMESTAMP.match(stamp):
        raise AuthenticationError(f"{TIMESTAMP_HEADER} must be Unix seconds with at most 3 decimals")
    skew = float(stamp) - now
    if abs(skew) > MAX_SKEW_SECONDS:
        raise AuthenticationError(
            f"{TIMESTAMP_HEADER} is {abs(skew):.0f} s {'ahead of' if skew > 0 else 'behind'} the gateway's "
            f"clock (at most {MAX_SKEW_SECONDS:.0f} s allowed); sign with the current time"
        )
    signature_text = headers[SIGNATURE_HEADER]
    if not _SIGNATURE.match(signature_text):
        raise AuthenticationError(f"{SIGNATURE_HEADER} must be 0x followed by 130 hex digits (65 bytes)")
    if not _METHOD.match(method):
        raise AuthenticationError(f"cannot sign method {method!r}")
    signature = bytes.fromhex(signature_text[2:])
    message = request_message(method, request_target(connection), stamp, body)
    try:
        signer = Account.recover_message(encode_defunct(text=message), signature=signature)
    except Exception as err:  # eth_account raises several types (BadSignature, ValueError) for junk
        raise AuthenticationError(f"{SIGNATURE_HEADER} is not a valid signature") from err
    if signer != address:
        raise AuthenticationError(
            f"the signature is not {address}'s over this request (method, path and query, timestamp, body)"
        )
    if accounts.get(address) is None:
        raise AuthenticationError(f"{address} has no client account at this gateway")
    if not accounts.use_signature(signature, expires_at=float(stamp) + MAX_SKEW_SECONDS + 1.0):
        raise AuthenticationError("this signature was used before (replay); sign each request anew")
    return AuthenticatedClient(address, "signature")
