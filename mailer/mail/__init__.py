"""Outgoing mail: MIME, the one sandboxed Jinja2 environment (and the bounds on a render's work),
link tokens, VERP, DKIM and SMTP."""
