"""`Connection.one_of`: a condition on a list of ids, one statement text per engine whatever
their number (PostgreSQL: one array literal), through the store functions that use it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from mailer.store import customers
from mailer.store.db import open_db
from mailer.store.engine import int_array
from tests.campaigns.world import World
from tests.servers import SmtpSink


@pytest.fixture
def world(tmp_path: Path, database: Path | str) -> Iterator[World]:
    yield World.build(tmp_path, SmtpSink(), database)


async def test_customers_are_found_by_any_number_of_ids_in_id_order(world: World) -> None:
    await world.add_customers(1200)
    ids = [int(r[0]) for r in world.rows("SELECT id FROM customers ORDER BY id")]
    async with open_db(world.db) as conn:
        assert [c.id for c in await customers.get_many(conn, [ids[5]])] == [ids[5]]
        wanted = [ids[9], ids[2], 10**9, ids[700]]
        assert [c.id for c in await customers.get_many(conn, wanted)] == sorted(
            [ids[2], ids[9], ids[700]])
        assert [c.id for c in await customers.get_many(conn, ids)] == ids
        condition, parameters = conn.one_of("id", ids[:3])
        if conn.engine == "postgresql":
            assert (condition, len(parameters)) == ("id = ANY(?::bigint[])", 1)
        else:
            assert (condition, len(parameters)) == ("id IN (?,?,?)", 3)


def test_an_int_array_literal_takes_integers_only() -> None:
    assert int_array([3, 1, 20]) == "{3,1,20}"
    assert int_array([]) == "{}"
    with pytest.raises(ValueError):
        int_array(["1}; DROP TABLE customers; --"])  # type: ignore[list-item]
