"""Outgoing mail: MIME, the one sandboxed Jinja2 environment, link tokens, VERP, DKIM and SMTP."""
