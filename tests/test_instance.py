"""The instance name: MAILER_INSTANCE, else the hostname; leases and claims carry it."""

from __future__ import annotations

import socket

import pytest

from mailer.consent.confirmations import this_process
from mailer.instance import instance_name
from mailer.store.leases import new_holder


def test_without_mailer_instance_the_name_is_the_hostname(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MAILER_INSTANCE", raising=False)
    assert instance_name() == socket.gethostname()


def test_a_blank_mailer_instance_falls_back_to_the_hostname(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MAILER_INSTANCE", "  ")
    assert instance_name() == socket.gethostname()


def test_mailer_instance_names_the_lease_holder_and_the_claim_owner(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MAILER_INSTANCE", " host-b ")
    assert instance_name() == "host-b"
    assert new_holder().host == "host-b"
    assert this_process().host == "host-b"
