"""VERP envelope senders: every message we send can be traced back from the bounce it causes.

Each message goes out with its own envelope sender (SMTP ``MAIL FROM``, which the receiving
MTA turns into ``Return-Path`` and uses as the address of any delivery report, RFC 5321
§4.5.5): ``bounces+TOKEN@domain`` under ``[bounces] address``. The token names the message
we sent and carries a short HMAC under the campaign secret, so a report addressed to a forged
or altered token is recognised as not ours:

    c{campaign_id}-{customer_id}-{sig}   a campaign message to one customer
    n{outbox_id}-{sig}                   a confirmation (the outbox row that sent it)

``sig`` is the first 10 bytes (80 bits) of HMAC-SHA256(secret, ``"verp:" + kind:ids``) in
lower-case base32 without padding (16 characters). The token holds no email address, only
lower-case letters, digits and ``-`` (valid in an RFC 5321 §4.1.2 dot-atom local part), and
it is read back case-insensitively: some MTAs lower- or upper-case local parts on the way.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

_SIG_BYTES = 10
_SEPARATOR = "+"
_TOKEN = re.compile(r"(?:c(?P<campaign>0|[1-9][0-9]{0,17})-(?P<customer>0|[1-9][0-9]{0,17})"
                    r"|n(?P<outbox>0|[1-9][0-9]{0,17}))-(?P<sig>[a-z2-7]{16})")


@dataclass(frozen=True)
class Tag:
    """The message a VERP address names: a campaign message, or a confirmation."""

    kind: Literal["campaign", "confirmation"]
    campaign_id: int | None = None
    customer_id: int | None = None
    confirmation_id: int | None = None  # the outbox row id

    @classmethod
    def campaign(cls, campaign_id: int, customer_id: int) -> Tag:
        return cls("campaign", campaign_id=campaign_id, customer_id=customer_id)

    @classmethod
    def confirmation(cls, outbox_id: int) -> Tag:
        return cls("confirmation", confirmation_id=outbox_id)

    def _body(self) -> str:
        if self.kind == "campaign":
            if self.campaign_id is None or self.customer_id is None:
                raise ValueError("a campaign tag needs a campaign id and a customer id")
            ids: tuple[int, ...] = (self.campaign_id, self.customer_id)
            prefix = "c"
        else:
            if self.confirmation_id is None:
                raise ValueError("a confirmation tag needs an outbox id")
            ids = (self.confirmation_id,)
            prefix = "n"
        if any(i < 0 for i in ids):
            raise ValueError(f"VERP ids must not be negative: {ids}")
        return prefix + "-".join(str(i) for i in ids)


def _signature(secret: str, body: str) -> str:
    if not secret:
        raise ValueError("the VERP secret is empty")
    digest = hmac.new(secret.encode("utf-8"), f"verp:{body}".encode(), hashlib.sha256).digest()
    return base64.b32encode(digest[:_SIG_BYTES]).decode("ascii").lower()


def token(tag: Tag, secret: str) -> str:
    """The token for `tag`, e.g. ``"c12-345-mfrggzdfmztwq2lk"``."""
    body = tag._body()
    return f"{body}-{_signature(secret, body)}"


def address(bounce_address: str, tag: Tag, secret: str) -> str:
    """The envelope sender for one message: ``local+TOKEN@domain`` of `bounce_address`."""
    local, at, domain = bounce_address.strip().rpartition("@")
    if not (at and local and domain):
        raise ValueError("the bounce address is not local@domain")
    return f"{local}{_SEPARATOR}{token(tag, secret)}@{domain}"


def parse(
    candidate: str,
    *,
    bounce_address: str,
    secret: str,
    previous_secrets: Sequence[str] = (),
) -> Tag | None:
    """The tag a VERP address carries, or None: not under `bounce_address`, malformed, forged.

    `candidate` may be a bare address or ``<address>`` (a Return-Path). The signature may be
    under `secret` or any of `previous_secrets` (addresses of mail sent before a rotation).
    """
    value = candidate.strip()
    if value.startswith("<") and value.endswith(">"):
        value = value[1:-1].strip()
    local, at, domain = value.lower().rpartition("@")
    base_local, base_at, base_domain = bounce_address.strip().lower().rpartition("@")
    if not (at and base_at) or domain != base_domain:
        return None
    prefix = base_local + _SEPARATOR
    if not local.startswith(prefix):
        return None
    match = _TOKEN.fullmatch(local[len(prefix):])
    if match is None:
        return None
    if match["outbox"] is not None:
        tag = Tag.confirmation(int(match["outbox"]))
    else:
        tag = Tag.campaign(int(match["campaign"]), int(match["customer"]))
    body = tag._body()
    given = match["sig"].encode("ascii")
    for key in (secret, *previous_secrets):
        if not key:
            continue
        # Constant-time comparison: the signature cannot be found byte by byte from timing.
        if hmac.compare_digest(_signature(key, body).encode("ascii"), given):
            return tag
    return None


@dataclass(frozen=True)
class Verifier:
    """`parse` with its keys bound: what the report reader is given to recognise our tags."""

    bounce_address: str
    secret: str
    previous_secrets: tuple[str, ...] = ()

    def parse(self, candidate: str) -> Tag | None:
        if not self.bounce_address or not self.secret:
            return None
        return parse(candidate, bounce_address=self.bounce_address, secret=self.secret,
                     previous_secrets=self.previous_secrets)
