"""Unsubscribe tokens: who wants to stop which email, signed so it cannot be forged.

Two kinds of token, both deterministic (the same inputs always give the same token), without
expiry (an opt-out link must keep working, PECR), without any email address, and made only of
URL-safe characters (RFC 3986 §2.3), so they go into a link path as they are:

- **Campaign tokens** (the current kind): ``{customer_id}.{campaign_id}.{sig}``
  naming the customer and the campaign the link came from. ``sig`` is the first 16 bytes of
  HMAC-SHA256(secret, ``"campaign-unsubscribe:{customer_id}:{campaign_id}"``), base64url
  without padding. `verify_campaign_token` accepts the current secret and any previous ones
  (`[campaigns] previous_secrets`), so links in mail sent before a rotation keep working.
- **Category tokens** (the first kind, still in mail already delivered):
  ``{customer_id}.{category}.{sig}``, described below.

- **Confirmation tokens**: ``{customer_id}.o{outbox_id}.{sig}``, the preference-page link in a
  confirmation email (the outbox row it was sent from); ``sig`` is the first 16 bytes of
  HMAC-SHA256(secret, ``"confirmation-preferences:{customer_id}:{outbox_id}"``).

The web server accepts all three (`read_link_token`). In a category token ``sig`` is the first
16 bytes of HMAC-SHA256(secret, ``"{customer_id}:{category}"``), base64url without padding.

Two links name no customer and change nothing: the preview's sample (`SAMPLE_TOKEN`, not a
token at all) and a campaign's test copies' (``test.{campaign_id}.{sig}``, signed, so the page
saying "this is a test copy" answers only links we made). A customer's own token goes only
into a message that is being sent; the web server also checks the ledger before it opens one.
"""

import base64
import hashlib
import hmac
import re
from collections.abc import Sequence
from dataclasses import dataclass

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


# --- campaign tokens --------------------------------------------------------------------------

# Longest token we ever make: two 20-digit ids, two dots, 22 signature characters. Anything
# longer is refused before any HMAC is computed.
_MAX_TOKEN_CHARS = 64
# 16 bytes in base64url without padding.
_SIG = re.compile(r"[A-Za-z0-9_-]{22}")


def _campaign_signature(secret: str, customer_id: int, campaign_id: int) -> str:
    if not secret:
        raise ValueError("the unsubscribe token secret is empty")
    # A message prefix of its own, so a campaign token's signature can never be taken for a
    # category token's (`"42:7"` would otherwise mean both).
    message = f"campaign-unsubscribe:{customer_id}:{campaign_id}".encode()
    digest = hmac.digest(secret.encode("utf-8"), message, "sha256")  # OpenSSL's one-shot path
    return base64.urlsafe_b64encode(digest[:_SIG_BYTES]).rstrip(b"=").decode("ascii")


def campaign_token(secret: str, customer_id: int, campaign_id: int) -> str:
    """The token for one customer in one campaign, e.g. ``"42.7.Xy…"`` (about 30 characters).

    Raises ValueError for an empty secret or a negative id.
    """
    if customer_id < 0 or campaign_id < 0:
        raise ValueError(f"ids must not be negative (customer {customer_id}, "
                         f"campaign {campaign_id})")
    return f"{customer_id}.{campaign_id}.{_campaign_signature(secret, customer_id, campaign_id)}"


def verify_campaign_token(secrets: Sequence[str], token: str) -> tuple[int, int] | None:
    """The (customer_id, campaign_id) a campaign token was made for under any of `secrets`
    (the current one first, then previous ones), or None if it is malformed or forged."""
    if len(token) > _MAX_TOKEN_CHARS:
        return None
    customer_part, _, rest = token.partition(".")
    campaign_part, _, sig = rest.partition(".")
    if not (_CUSTOMER_ID.fullmatch(customer_part) and _CUSTOMER_ID.fullmatch(campaign_part)
            and _SIG.fullmatch(sig)):
        return None
    customer_id, campaign_id = int(customer_part), int(campaign_part)
    given = sig.encode("ascii")
    found = False
    for secret in secrets:
        if not secret:
            continue
        expected = _campaign_signature(secret, customer_id, campaign_id).encode("ascii")
        # Constant time, and every secret is tried, so timing tells nothing about which matched.
        found |= hmac.compare_digest(expected, given)
    return (customer_id, campaign_id) if found else None


# --- confirmation tokens ----------------------------------------------------------------------

_OUTBOX_PART = re.compile(r"o(0|[1-9][0-9]*)")


def _confirmation_signature(secret: str, customer_id: int, outbox_id: int) -> str:
    if not secret:
        raise ValueError("the unsubscribe token secret is empty")
    # A prefix of its own, so it can never be taken for a campaign or category token.
    message = f"confirmation-preferences:{customer_id}:{outbox_id}".encode()
    digest = hmac.digest(secret.encode("utf-8"), message, "sha256")
    return base64.urlsafe_b64encode(digest[:_SIG_BYTES]).rstrip(b"=").decode("ascii")


def confirmation_token(secret: str, customer_id: int, outbox_id: int) -> str:
    """The preference-page token of one confirmation (outbox row) to one customer."""
    if customer_id < 0 or outbox_id < 0:
        raise ValueError(f"ids must not be negative (customer {customer_id}, "
                         f"confirmation {outbox_id})")
    sig = _confirmation_signature(secret, customer_id, outbox_id)
    return f"{customer_id}.o{outbox_id}.{sig}"


def verify_confirmation_token(secrets: Sequence[str], token: str) -> tuple[int, int] | None:
    """The (customer_id, outbox_id) a confirmation token was made for, or None."""
    if len(token) > _MAX_TOKEN_CHARS:
        return None
    customer_part, _, rest = token.partition(".")
    outbox_part, _, sig = rest.partition(".")
    outbox = _OUTBOX_PART.fullmatch(outbox_part)
    if not (_CUSTOMER_ID.fullmatch(customer_part) and outbox and _SIG.fullmatch(sig)):
        return None
    customer_id, outbox_id = int(customer_part), int(outbox.group(1))
    found = False
    for secret in secrets:
        if secret:
            expected = _confirmation_signature(secret, customer_id, outbox_id).encode("ascii")
            found |= hmac.compare_digest(expected, sig.encode("ascii"))
    return (customer_id, outbox_id) if found else None


@dataclass(frozen=True)
class LinkToken:
    """Who an unsubscribe link is for, and where it came from: a campaign (campaign tokens) or
    just a category (the first kind of token)."""

    customer_id: int
    campaign_id: int | None = None
    category: str | None = None
    confirmation_id: int | None = None  # the outbox row of the confirmation it came in

    @property
    def reference(self) -> str:
        """The consent event's reference for a change made through this link."""
        if self.campaign_id is not None:
            return f"campaign {self.campaign_id}"
        if self.confirmation_id is not None:
            return f"confirmation {self.confirmation_id}"
        return f"unsubscribe link ({self.category})"


def read_link_token(secrets: Sequence[str], token: str) -> LinkToken | None:
    """What an unsubscribe link's token names, under any of `secrets`, or None.

    Campaign tokens first; category tokens (the first kind, in mail already delivered) are
    accepted too, so no link ever sent stops working.
    """
    if not token or len(token) > _MAX_TOKEN_CHARS:
        return None
    campaign = verify_campaign_token(secrets, token)
    if campaign is not None:
        return LinkToken(customer_id=campaign[0], campaign_id=campaign[1])
    confirmation = verify_confirmation_token(secrets, token)
    if confirmation is not None:
        return LinkToken(customer_id=confirmation[0], confirmation_id=confirmation[1])
    for secret in secrets:
        if not secret:
            continue
        category = verify_token(secret, token)
        if category is not None:
            return LinkToken(customer_id=category[0], category=category[1])
    return None


# --- the preference page's form nonce ---------------------------------------------------------


def _nonce_signature(secret: str, customer_id: int, issued_s: int) -> str:
    message = f"preference-page:{customer_id}:{issued_s}".encode()
    digest = hmac.digest(secret.encode("utf-8"), message, "sha256")
    return base64.urlsafe_b64encode(digest[:_SIG_BYTES]).rstrip(b"=").decode("ascii")


def form_nonce(secret: str, customer_id: int, issued_s: float) -> str:
    """The nonce a preference page carries in its forms: ``{issued}.{sig}``, proving that a
    submission comes from a page we served for this customer (not a blind POST)."""
    if not secret:
        raise ValueError("the unsubscribe token secret is empty")
    issued = int(issued_s)
    return f"{issued}.{_nonce_signature(secret, customer_id, issued)}"


def verify_form_nonce(secrets: Sequence[str], customer_id: int, nonce: str, *, now_s: float,
                      max_age_s: float) -> bool:
    """Whether `nonce` was made for this customer under one of `secrets`, at most `max_age_s`
    ago (and not in the future beyond a minute of clock skew)."""
    issued_part, _, sig = nonce.partition(".")
    if len(nonce) > _MAX_TOKEN_CHARS or not (_CUSTOMER_ID.fullmatch(issued_part)
                                             and _SIG.fullmatch(sig)):
        return False
    issued = int(issued_part)
    if not now_s - max_age_s <= issued <= now_s + 60:
        return False
    found = False
    for secret in secrets:
        if secret:
            expected = _nonce_signature(secret, customer_id, issued).encode("ascii")
            found |= hmac.compare_digest(expected, sig.encode("ascii"))
    return found


# --- links that change nothing: a preview's sample, a test copy's ---------------------------

# The preview's link: not a token at all, so nothing it could open belongs to anyone.
SAMPLE_TOKEN = "SAMPLE"
_TEST_COPY = re.compile(r"test\.(0|[1-9][0-9]*)\.([A-Za-z0-9_-]{22})")


def _test_copy_signature(secret: str, campaign_id: int) -> str:
    if not secret:
        raise ValueError("the unsubscribe token secret is empty")
    # A prefix of its own, so it can never be taken for another kind's signature.
    digest = hmac.digest(secret.encode("utf-8"), f"campaign-test-copy:{campaign_id}".encode(),
                         "sha256")
    return base64.urlsafe_b64encode(digest[:_SIG_BYTES]).rstrip(b"=").decode("ascii")


def token_for_test_copies(secret: str, campaign_id: int) -> str:
    """The link token of a campaign's test copies, ``test.{campaign_id}.{sig}``: it names no
    customer (a test copy goes to any address), so it opens nothing but the page saying so.
    (Not called ``test_…``: a test runner would collect it.)"""
    if campaign_id < 0:
        raise ValueError(f"campaign id {campaign_id} is negative")
    return f"test.{campaign_id}.{_test_copy_signature(secret, campaign_id)}"


def verify_token_for_test_copies(secrets: Sequence[str], token: str) -> int | None:
    """The campaign a test copy's token was made for under any of `secrets`, or None."""
    match = _TEST_COPY.fullmatch(token) if len(token) <= _MAX_TOKEN_CHARS else None
    if match is None:
        return None
    campaign_id, found = int(match.group(1)), False
    for secret in secrets:
        if secret:
            expected = _test_copy_signature(secret, campaign_id).encode("ascii")
            found |= hmac.compare_digest(expected, match.group(2).encode("ascii"))
    return campaign_id if found else None
