"""The public web doors of `mailer`: the unsubscribe link (RFC 8058 one-click and the
preference page), served by aiohttp.

    app.py          make_app (routes, middlewares, database lifecycle) and serve (listen, stop)
    unsubscribe.py  the handlers: GET/HEAD the page, POST one-click or the page's forms
    choices.py      what a click or a saved page does to consent (through mailer.consent.change)
    evidence.py     what a change records: client address, user agent, the wording version
    middlewares.py  the rate limits (per link, bad tokens, per client), error pages, the log line
    pages.py        templates/web/ through mailer.http.pages, and the pages' CSP

The security headers, serving, the client's address and page rendering are the shared
plumbing of `mailer.http`.
    context.py      what the handlers share (database connection, pages, secrets, clock)
"""

from mailer.public.app import make_app, serve

__all__ = ["make_app", "serve"]
