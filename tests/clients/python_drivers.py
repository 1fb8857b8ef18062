"""psycopg 3 and asyncpg through pgstrata (run by tests/integration/clients.rs).

Connection settings come from the libpq environment (PGHOST, PGPORT, PGUSER,
PGPASSWORD, PGDATABASE). The pool behind the proxy is smaller than the number of
clients here, so prepared statements land on server connections that lack them.
Prints "ok" and exits 0 when every check passed.
"""

import asyncio
import datetime
import decimal
import json
import random
import uuid

import asyncpg
import psycopg
from psycopg import errors


def check_psycopg():
    # prepare_threshold=0: every query is a named server-side prepared statement.
    conns = [psycopg.connect(prepare_threshold=0, autocommit=True) for _ in range(12)]
    for i in range(400):
        conn = random.choice(conns)
        row = conn.execute("SELECT %s::int + 1, %s::text || 'é'", (i, "x" * (i % 5))).fetchone()
        assert row == (i + 1, "x" * (i % 5) + "é"), row

    conn = conns[0]
    with conn.pipeline():
        cursors = [conn.execute("SELECT %s::int * 3", (k,)) for k in range(100)]
    assert [c.fetchone()[0] for c in cursors] == [k * 3 for k in range(100)]

    try:
        with conn.transaction():
            conn.execute("SELECT 1 / 0")
        raise AssertionError("no error")
    except errors.DivisionByZero as e:
        assert e.sqlstate == "22012"
    assert conn.execute("SELECT 42").fetchone() == (42,)

    when = datetime.datetime(2024, 2, 29, 12, 34, 56, 789012, tzinfo=datetime.timezone.utc)
    ident = uuid.uuid4()
    row = conn.execute(
        "SELECT %s::numeric, %s::timestamptz, %s::jsonb, %s::uuid, %s::bytea, %s::int[]",
        (decimal.Decimal("12345.678900"), when, json.dumps({"a": [1, None]}), ident,
         b"\x00\xff", [1, None, 3]),
        binary=True,
    ).fetchone()
    assert row == (decimal.Decimal("12345.678900"), when, {"a": [1, None]}, ident,
                   b"\x00\xff", [1, None, 3]), row

    with conn.transaction():
        conn.execute("CREATE TEMP TABLE copied (a int, b text) ON COMMIT DROP")
        with conn.cursor() as cur:
            with cur.copy("COPY copied FROM STDIN") as copy:
                for k in range(1000):
                    copy.write_row((k, f"row {k}"))
            assert cur.execute("SELECT count(*), sum(a) FROM copied").fetchone() == (1000, 499500)
            with cur.copy("COPY copied TO STDOUT") as copy:
                out = b"".join(bytes(chunk) for chunk in copy)
            assert out.count(b"\n") == 1000 and b"row 999\n" in out

    # A setting is the client's own, over many transactions on other server connections.
    conns[1].execute("SET statement_timeout = '4321ms'")
    for _ in range(20):
        for k, other in enumerate(conns):
            shown = other.execute("SHOW statement_timeout").fetchone()[0]
            assert shown == ("4321ms" if k == 1 else "0"), (k, shown)
    for c in conns:
        c.close()


async def check_asyncpg():
    pool = await asyncpg.create_pool(min_size=12, max_size=12)

    async def worker(n):
        async with pool.acquire() as conn:
            for i in range(100):
                assert await conn.fetchval("SELECT $1::int * 2", i) == i * 2
                rows = await conn.fetch("SELECT g, g::text FROM generate_series(1, $1::int) g", i % 7 + 1)
                assert [tuple(r) for r in rows] == [(g, str(g)) for g in range(1, i % 7 + 2)]
                async with conn.transaction():
                    await conn.execute("SELECT pg_advisory_xact_lock($1)", n)

    await asyncio.gather(*(worker(n) for n in range(30)))

    conn = await asyncpg.connect()
    stmt = await conn.prepare("SELECT $1::numeric + 1, $2::jsonb, $3::uuid, $4::int8[]")
    ident = uuid.uuid4()
    row = await stmt.fetchrow(decimal.Decimal("1.5"), '{"a": 1}', ident, [1, 2])
    assert row[0] == decimal.Decimal("2.5") and json.loads(row[1]) == {"a": 1}, row
    assert row[2] == ident and row[3] == [1, 2], row
    try:
        async with conn.transaction():
            await conn.execute("SELECT 1 / 0")
        raise AssertionError("no error")
    except asyncpg.exceptions.DivisionByZeroError as e:
        assert e.sqlstate == "22012"
    async with conn.transaction():
        await conn.execute("CREATE TEMP TABLE many (a int, b text) ON COMMIT DROP")
        await conn.executemany("INSERT INTO many VALUES ($1, $2)", [(k, str(k)) for k in range(500)])
        await conn.copy_records_to_table("many", records=[(k, "c") for k in range(500, 700)])
        assert await conn.fetchval("SELECT count(*) FROM many") == 700
    await conn.close()
    await pool.close()


check_psycopg()
asyncio.run(check_asyncpg())
print("ok")
