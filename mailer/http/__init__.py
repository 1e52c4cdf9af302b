"""The HTTP plumbing both listeners stand on (`mailer.public` and `mailer.console`).

    headers.py   the security headers on every answer, `Server: mailer`, the CSP and its
                 style hash
    client.py    the client's address after trusted proxies, and the key a limit counts it by
    limits.py    token buckets per key (the public listener's rate limits)
    pages.py     rendering a listener's pages through the one Jinja2 sandbox
                 (`mailer.mail.templates`), with the stylesheet they inline
    serving.py   listening on host:port until stop, then finishing the requests in flight
    forms.py     reading a POSTed form: the fields, or a 400 with one line, never a 500

Nothing here knows about customers, tokens or sessions: the apps above do.
"""
