// node-postgres through pgstrata (run by tests/integration/clients.rs). Connection
// settings come from the libpq environment (PGHOST, PGPORT, PGUSER, PGPASSWORD,
// PGDATABASE). Prints "ok" and exits 0 when every check passed.
const assert = require('assert');
const { Pool, Client } = require('pg');

async function main() {
  // More clients than the proxy's pool has server connections: named statements land
  // on connections that lack them.
  const pool = new Pool({ max: 24 });
  const jobs = [];
  for (let n = 0; n < 48; n++) {
    jobs.push((async () => {
      for (let i = 0; i < 40; i++) {
        const r = await pool.query({ name: 'double', text: 'SELECT $1::int * 2 AS v', values: [i] });
        assert.strictEqual(r.rows[0].v, i * 2);
        const r2 = await pool.query({
          name: 'count' + (i % 3),
          text: 'SELECT count(*)::int AS c, $2::text AS t FROM generate_series(1, $1::int)',
          values: [i + 1, 'é' + n],
        });
        assert.deepStrictEqual(r2.rows[0], { c: i + 1, t: 'é' + n });
      }
    })());
  }
  await Promise.all(jobs);

  const client = await pool.connect();
  await client.query('BEGIN');
  await assert.rejects(client.query('SELECT 1 / 0'), (e) => e.code === '22012');
  await client.query('ROLLBACK');
  assert.strictEqual((await client.query('SELECT 7 AS x')).rows[0].x, 7);
  const typed = await client.query(
    "SELECT $1::jsonb AS j, $2::bytea AS b, $3::int[] AS a, '2024-02-29T12:34:56.789Z'::timestamptz AS t",
    [{ a: [1, null] }, Buffer.from([0, 255]), [1, null, 3]],
  );
  assert.deepStrictEqual(typed.rows[0].j, { a: [1, null] });
  assert.deepStrictEqual(typed.rows[0].b, Buffer.from([0, 255]));
  assert.deepStrictEqual(typed.rows[0].a, [1, null, 3]);
  assert.strictEqual(typed.rows[0].t.toISOString(), '2024-02-29T12:34:56.789Z');
  client.release();

  // A setting stays with the client that made it.
  const mine = new Client();
  const other = new Client();
  await mine.connect();
  await other.connect();
  await mine.query("SET statement_timeout = '4321ms'");
  for (let i = 0; i < 20; i++) {
    assert.strictEqual((await mine.query('SHOW statement_timeout')).rows[0].statement_timeout, '4321ms');
    assert.strictEqual((await other.query('SHOW statement_timeout')).rows[0].statement_timeout, '0');
  }
  await mine.end();
  await other.end();
  await pool.end();
  console.log('ok');
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
