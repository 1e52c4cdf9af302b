"""The one exception tree of `mailer`: every error a person can see, with its exit code.

Each class carries the exit code the command line leaves with (`exit_code`), so the CLI maps
errors by class in one place (`mailer.cli.support.MailerGroup.invoke`) and never by reading
messages; what a caller must decide on is a field or a class, never the text. `str()` of every
error is one line that names the thing at fault: the settings key, the CSV line, the template
and line, the campaign, the server. Every module imports these from here, and only from here.

    MailerError                      1  the root; never raised itself
     ├── BadInput                    2  input that cannot be used as it is
     │    ├── SettingsError             a settings key: `[imap] port: expected an integer, ...`
     │    ├── CsvError                  a CSV file as a whole (its header, its encoding)
     │    │    └── ConsentNotNamed          no consent column, and no default named for it
     │    ├── TemplateError             a template file and line
     │    │    └── TemplateTooSlow          a render that ran past its time limit
     │    ├── CampaignInvalid           a campaign's kind, time, template, or the send settings
     │    ├── HeaderInjection           a value that cannot go into a mail header safely
     │    └── MalformedMessage          an incoming message that cannot be parsed
     ├── NotFound                    1  no such campaign, customer or review item
     │    ├── CampaignNotFound
     │    └── ErasedCustomer            an address whose customer was erased
     ├── Refused                     1  it exists, but the action does not apply in its state
     │    └── CampaignRefused           wrong status, or another process holds the lease
     ├── Unavailable                 3  a server or the database cannot be used (try later)
     │    ├── CampaignPaused            a send that paused itself (SMTP, failures, reports)
     │    ├── StoreError                the database (locked, full, read-only, unreachable)
     │    │    └── SchemaTooNew            its schema is newer than this code
     │    ├── ImapError                 the IMAP server
     │    │    └── ConnectionLost           the connection dropped, or the server said BYE
     │    ├── SmtpError                 the SMTP server
     │    │    ├── TransientSmtpError       4xx, a dropped connection, a timeout: try again
     │    │    └── PermanentSmtpError       5xx: do not try again
     │    └── DnsError                  the DNS servers `mailer doctor` asks
     └── Interrupted               130  Ctrl-C (a `campaign send` paused cleanly)

`mailer status` is the exception to these codes: it answers monitoring, so it uses the
monitoring-plugins convention (0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN: any error above).

Library exceptions (sqlite3, aioimaplib, aiosmtplib, jinja2) are translated into these at the
edge of the module that calls the library (`raise ... from exc`); nothing above `store/` ever
sees a `sqlite3` exception.
"""

from __future__ import annotations

import socket

EXIT_OK = 0
EXIT_NOT_FOUND = 1
EXIT_BAD_INPUT = 2
EXIT_UNAVAILABLE = 3
EXIT_INTERRUPTED = 130
# `mailer status` (monitoring-plugins): the state could not be found out.
EXIT_UNKNOWN = 3


class MailerError(Exception):
    """The root of every error `mailer` raises on purpose; `str()` is one line."""

    exit_code: int = EXIT_NOT_FOUND


class BadInput(MailerError):
    """Input that cannot be used as it is: arguments, settings, CSV, a template, a message."""

    exit_code = EXIT_BAD_INPUT


class NotFound(MailerError):
    """The thing asked for does not exist."""

    exit_code = EXIT_NOT_FOUND


class Refused(MailerError):
    """The thing exists, but the action does not apply to it in its current state."""

    exit_code = EXIT_NOT_FOUND


class Unavailable(MailerError):
    """A server or the database cannot be used right now; trying again later may work."""

    exit_code = EXIT_UNAVAILABLE


# --- bad input ---------------------------------------------------------------------------


class SettingsError(BadInput):
    """A settings file that cannot be used; the message is one line naming the key."""


class CsvError(BadInput):
    """A CSV file that cannot be read as a whole (its header, its encoding)."""


class ConsentNotNamed(CsvError):
    """A CSV without a consent column, imported without naming the consent its rows gave."""


class TemplateError(BadInput):
    """A template cannot be loaded or rendered.

    `str()` is one line naming the template, the line when known, and the problem, e.g.
    `template campaigns/x.html line 3: 'customer' has no attribute 'nmae'`.
    """

    def __init__(self, message: str, *, template: str, line: int | None = None) -> None:
        super().__init__(message)
        self.template = template
        self.line = line


class TemplateTooSlow(TemplateError):
    """A render ran past its time limit (`mailer.mail.template_limits`): the template does
    too much work, for every recipient alike, so a campaign sending it stops."""


class CampaignInvalid(BadInput):
    """Bad input for a campaign: a kind, a time, a template, or settings a send needs.

    `field` names the input at fault when a form must show the error beside it: "subject"
    or "template" (empty when it is not one input of the campaign form)."""

    def __init__(self, message: str, *, field: str = "") -> None:
        super().__init__(message)
        self.field = field


class HeaderInjection(BadInput, ValueError):
    """An address, message id or URL cannot be put into a header safely as it is."""


class MalformedMessage(BadInput):
    """An incoming message that cannot be parsed safely (it goes to review)."""


# --- not found, refused ------------------------------------------------------------------


class CampaignNotFound(NotFound):
    """No such campaign (or no such customer to preview it for)."""


class ErasedCustomer(NotFound):
    """The address asked for belonged to a customer who was erased (the suppression list)."""


class CampaignRefused(Refused):
    """The campaign action does not apply now: wrong status, or another process sends it."""


# --- unavailable -------------------------------------------------------------------------


class StoreError(Unavailable):
    """The database cannot be opened or used; the message is one line."""


class SchemaTooNew(StoreError):
    """The database's schema is newer than this code (another host was upgraded first):
    waiting cannot help, so `mailer run` refuses to start instead of retrying."""


class ImapError(Unavailable):
    """The IMAP server cannot be used: refused, timed out, or answered NO/BAD."""


class ConnectionLost(ImapError):
    """The IMAP connection dropped, or the server said BYE."""


class SmtpError(Unavailable):
    """The SMTP server cannot take a message."""


class TransientSmtpError(SmtpError):
    """Worth retrying: a 4xx reply, a dropped connection or a timeout."""


class PermanentSmtpError(SmtpError):
    """Not worth retrying: a 5xx reply."""


class DnsError(Unavailable):
    """No DNS server answered (timed out, refused, SERVFAIL); not "no such record"."""


class CampaignPaused(Unavailable):
    """A `campaign send` that paused itself: the SMTP server refused or stayed unreachable,
    too many recipients failed, or its bounce or complaint rate passed `[bounces]`'s limits."""


# --- interrupted -------------------------------------------------------------------------


class Interrupted(MailerError):
    """Stopped by Ctrl-C (SIGINT) or SIGTERM; the work can carry on later."""

    exit_code = EXIT_INTERRUPTED


# --- phrasing a library's failure at the edge -----------------------------------------------


def unresolved_host(exc: BaseException, host: str) -> str | None:
    """The one line for a failed DNS look-up of `host` anywhere in `exc`'s chain (a library
    may wrap it), or None. Its errno is a resolver code (EAI_*, negative), which
    `os.strerror` cannot name: "Unknown error -2" would hide which host is at fault."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, socket.gaierror):
            return f'cannot resolve host name "{host}" ({seen.strerror or seen})'
        seen = seen.__cause__ or seen.__context__
    return None
