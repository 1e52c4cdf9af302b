"""Consent: the one transaction that changes a customer's consent,
and the confirmations it queues."""
