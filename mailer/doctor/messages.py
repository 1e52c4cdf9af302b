"""The message checks: a campaign message built for a sample customer with the sender's own
builders (`campaigns.messages`), and a confirmation built by the outbox's, read back the way
a receiver reads them.

`build_samples` makes the two messages (the only part that reads templates and the key);
`judge_*` take the bytes and decide. The DKIM signature is verified by dkimpy against the key
record the DNS checks found, so a pass means receivers asking the same DNS will agree.
"""

from __future__ import annotations

import email
import email.policy
import html
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import parseaddr, parsedate_to_datetime

import dkim as dkimpy

from mailer.campaigns.messages import CampaignMessages, send_config
from mailer.campaigns.model import Campaign
from mailer.consent.confirmations import outbox_config
from mailer.doctor.dns_checks import DkimFacts
from mailer.doctor.report import Check, failed, passed
from mailer.errors import MailerError
from mailer.mail.outgoing import build_confirmation, message_id
from mailer.mail.templates import render_confirmation
from mailer.settings import Settings

SAMPLE_TEMPLATE = "welcome-offer"
_SAMPLE_EMAIL, _SAMPLE_NAME = "ann.example@example.com", "Ann Example"
_ONE_CLICK = "List-Unsubscribe=One-Click"
_HTTPS_IN_ANGLES = re.compile(r"<(https://[^>]+)>")
# RFC 5322 §2.1.1: a line MUST be at most 998 characters. (It SHOULD be at most 78, but a
# header holding a long URL cannot be folded inside it, §2.2.3: not a finding.)
_HARD_MAX_LINE = 998


@dataclass(frozen=True)
class Samples:
    campaign: bytes
    confirmation: bytes
    sender_domain: str
    signed: bool


def build_samples(settings: Settings, *, now: datetime | None = None) -> Samples:
    """A campaign message and a confirmation for a sample customer, signed when `[dkim]` is
    set. Raises MailerError (a template, the secret, the key) with one line."""
    now = now or datetime.now(UTC)
    config = send_config(settings)
    campaign = Campaign(id=1, kind="offers", template=SAMPLE_TEMPLATE,
                        subject="A sample for mailer doctor", status="draft",
                        scheduled_at=None, created_at=now.isoformat(), started_at=None,
                        finished_at=None, status_reason="", audience_at=None)
    # The sample link: a real token for customer 1 in campaign 1 could open a real page.
    built = CampaignMessages(campaign, config, date=now).build(
        customer_id=1, email=_SAMPLE_EMAIL, name=_SAMPLE_NAME, company="Example Ltd",
        sample=True)
    outbox = outbox_config(settings)
    subject, text, body_html = render_confirmation(
        outbox.templates_dir, customer_name=_SAMPLE_NAME, categories=("offers",),
        request_subject=settings.unsubscribe.subject)
    confirmation = build_confirmation(
        sender=outbox.sender, to_address=_SAMPLE_EMAIL, to_name=_SAMPLE_NAME,
        subject=subject, text=text, html=body_html, in_reply_to=None, references=(),
        message_id=message_id(outbox.message_id_domain), date=now)
    if outbox.signer is not None:
        confirmation = outbox.signer.sign(confirmation)
    return Samples(built.data, confirmation, config.domain, config.signer is not None)


def _parse(data: bytes) -> EmailMessage:
    message = email.message_from_bytes(data, policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    return message


def judge_format(data: bytes, sender_domain: str) -> Check:
    """RFC 5322 (line lengths, From, Date, one Message-ID in our domain) and MIME."""
    problems: list[str] = []
    lines = data.split(b"\r\n")
    if b"\n" in data.replace(b"\r\n", b""):
        problems.append("a line ends in a bare LF (RFC 5322 §2.1: CRLF)")
    longest = max(len(line) for line in lines)
    if longest > _HARD_MAX_LINE:
        problems.append(f"a line of {longest} characters (RFC 5322 §2.1.1: at most 998)")
    message = _parse(data)
    for name in ("From", "Date", "Message-ID", "MIME-Version", "Content-Type"):
        count = len(message.get_all(name) or [])
        if count != 1:
            problems.append(f"{count} {name} fields (RFC 5322 §3.6: exactly one)")
    msg_id = str(message.get("Message-ID", ""))
    if not msg_id.endswith(f"@{sender_domain}>"):
        problems.append(f"Message-ID {msg_id} is not in {sender_domain}")
    try:
        parsedate_to_datetime(str(message.get("Date", "")))
    except (TypeError, ValueError):
        problems.append("Date does not parse (RFC 5322 §3.3)")
    if message.defects or any(part.defects for part in message.walk()):
        defects = {type(d).__name__ for p in message.walk() for d in p.defects}
        problems.append(f"MIME defects: {', '.join(sorted(defects))}")
    if problems:
        return failed("messages", "RFC 5322", "; ".join(problems),
                      "the message builders (mailer.mail.outgoing) break a rule: report it")
    return passed("messages", "RFC 5322", f"From, Date, MIME; one Message-ID {msg_id}")


def unsubscribe_link(data: bytes) -> str:
    """The https URL of List-Unsubscribe, "" when there is none."""
    found = _HTTPS_IN_ANGLES.search(" ".join(str(_parse(data).get("List-Unsubscribe", ""))
                                             .split()))
    return found.group(1) if found else ""


def judge_one_click(data: bytes) -> Check:
    message = _parse(data)
    link, post = unsubscribe_link(data), str(message.get("List-Unsubscribe-Post", ""))
    if not link or post != _ONE_CLICK:
        return failed("messages", "One-click headers",
                      f"List-Unsubscribe https URL: {link or 'none'}; "
                      f"List-Unsubscribe-Post: {post or 'none'}",
                      'set [campaigns] unsubscribe_url to an "https://" URL (RFC 8058 §3.1)')
    return passed("messages", "One-click headers", f"List-Unsubscribe <{link}>, "
                                                   f"List-Unsubscribe-Post: {_ONE_CLICK}")


def judge_visible_link(data: bytes) -> Check:
    """Every text part shows the unsubscribe link (providers ask for one in the body)."""
    link = unsubscribe_link(data)
    parts = [p for p in _parse(data).walk() if p.get_content_maintype() == "text"]
    missing = []
    for part in parts:
        body = part.get_content() if isinstance(part, EmailMessage) else ""
        if not link or (link not in body and html.escape(link) not in body):
            missing.append(part.get_content_type())
    if missing or not parts:
        return failed("messages", "Visible unsubscribe link",
                      f"no unsubscribe link in {', '.join(missing) or 'any part'}",
                      "put {{ unsubscribe_url }} in every part of the campaign template")
    return passed("messages", "Visible unsubscribe link",
                  f"in every part ({', '.join(p.get_content_type() for p in parts)})")


def judge_feedback_id(data: bytes) -> Check:
    value = str(_parse(data).get("Feedback-ID", ""))
    if value.count(":") < 1:
        return failed("messages", "Feedback-ID", f"Feedback-ID: {value or 'none'}",
                      "the campaign builder must add it: report it")
    return passed("messages", "Feedback-ID", value)


def judge_dkim(data: bytes, facts: DkimFacts | None, signed: bool) -> Check:
    """dkimpy verifies the signature against the record the DNS check found (not its own
    lookup), so this agrees with what receivers asking that DNS see."""
    if not signed:
        return failed("messages", "DKIM signature", "the message is not signed",
                      "set [dkim] domain, selector and private_key_file")
    if facts is None or len(facts.records) != 1:
        return failed("messages", "DKIM signature", "signed, but no single key record to "
                      "verify it against", "publish the DKIM key (see the DNS check)")
    record = facts.records[0].encode("utf-8")

    def dnsfunc(name: bytes | str, timeout: float = 5) -> bytes | None:
        wanted = facts.name.rstrip(".") + "."
        asked = name.decode() if isinstance(name, bytes) else name
        return record if asked.rstrip(".") + "." == wanted else None

    try:
        valid = dkimpy.verify(data, dnsfunc=dnsfunc)
    except dkimpy.DKIMException as exc:
        return failed("messages", "DKIM signature", f"does not verify: {exc}",
                      "publish the record `mailer dkim dns` prints")
    if not valid:
        return failed("messages", "DKIM signature", f"does not verify against {facts.name}",
                      "publish the record `mailer dkim dns` prints in its place")
    return passed("messages", "DKIM signature", f"verifies against {facts.name}")


def judge_confirmation(data: bytes) -> Check:
    message = _parse(data)
    present = [h for h in ("List-Unsubscribe", "List-Unsubscribe-Post") if h in message]
    if present:
        return failed("messages", "Confirmation", f"carries {', '.join(present)} (it is not "
                      "marketing: no one-click)", "the confirmation builder must not add it")
    sender = parseaddr(str(message.get("From", "")))[1]
    return passed("messages", "Confirmation", f"from {sender}, no one-click header")


def message_checks(settings: Settings, facts: DkimFacts | None) -> list[Check]:
    try:
        samples = build_samples(settings)
    except MailerError as exc:
        return [failed("messages", "Sample message", f"cannot build one: {exc}",
                       "fix the setting or template named")]
    data = samples.campaign
    return [judge_format(data, samples.sender_domain), judge_one_click(data),
            judge_visible_link(data), judge_feedback_id(data),
            judge_dkim(data, facts, samples.signed), judge_confirmation(samples.confirmation)]
