"""Sample messages for the parsing tests."""

from __future__ import annotations

from email.message import EmailMessage

MAX_BYTES = 10 * 1024 * 1024


def plain_message(body: str, **headers: str) -> bytes:
    message = EmailMessage()
    message["From"] = headers.pop("From", "Jo Bloggs <jo@example.org>")
    message["To"] = "offers@telecom.example"
    message["Subject"] = headers.pop("Subject", "Unsubscribe special offers")
    message["Message-ID"] = "<1@example.org>"
    for name, value in headers.items():
        message[name.replace("_", "-")] = value
    message.set_content(body)
    return message.as_bytes()
