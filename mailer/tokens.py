"""Unsubscribe tokens: who wants to stop which category of email, signed so it cannot be forged.

A token reads ``{customer_id}.{category}.{sig}``: ``sig`` is the first 16 bytes of
HMAC-SHA256(secret, ``"{customer_id}:{category}"``), base64url without padding. Tokens are
deterministic (the same customer and category always get the same token), carry no expiry
(an opt-out link must keep working, PECR), and use only URL-safe characters (RFC 3986 §2.3),
so they can be placed in a link path as they are.
"""

import base64
import hashlib
import hmac
import re

_SIG_BYTES = 16
# RFC 3986 §2.3 unreserved characters: safe in a URL path without percent-encoding.
_CATEGORY = re.compile(r"[A-Za-z0-9._~-]+")
# Canonical decimal only (no sign, no leading zeros), so each customer has exactly one token.
_CUSTOMER_ID = re.compile(r"0|[1-9][0-9]*")


def _signature(secret: str, customer_id: int, category: str) -> str:
    if not secret:
        raise ValueError("the unsubscribe token secret is empty")
    digest = hmac.new(
        secret.encode("utf-8"), f"{customer_id}:{category}".encode(), hashlib.sha256
    ).digest()
    return base64.urlsafe_b64encode(digest[:_SIG_BYTES]).rstrip(b"=").decode("ascii")


def unsubscribe_token(secret: str, customer_id: int, category: str) -> str:
    """The token for one customer and one category of email, e.g. ``"42.special_offers.Xy…"``.

    Raises ValueError for an empty secret, a negative id, or a category that is not URL-safe.
    """
    if customer_id < 0:
        raise ValueError(f"customer id {customer_id} is negative")
    if not _CATEGORY.fullmatch(category):
        raise ValueError(f"category {category!r} is not URL-safe (letters, digits, . _ ~ -)")
    return f"{customer_id}.{category}.{_signature(secret, customer_id, category)}"


def verify_token(secret: str, token: str) -> tuple[int, str] | None:
    """The (customer_id, category) a token was made for, or None if it is malformed or forged."""
    customer_part, _, rest = token.partition(".")
    category, _, sig = rest.rpartition(".")
    if not (_CUSTOMER_ID.fullmatch(customer_part) and _CATEGORY.fullmatch(category) and sig):
        return None
    customer_id = int(customer_part)
    expected = _signature(secret, customer_id, category)
    # Constant-time comparison, so the signature cannot be guessed byte by byte from timing.
    if not hmac.compare_digest(expected.encode("ascii"), sig.encode("utf-8")):
        return None
    return customer_id, category


def unsubscribe_link(base_url: str, token: str) -> str:
    """``base_url/token``, with exactly one slash between them."""
    return f"{base_url.rstrip('/')}/{token}"
