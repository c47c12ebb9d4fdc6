// A service's inbox worker in Node, through the inbox's SQL API (schema/migrations/0009): the
// same loop as inbox_worker.py, with the `pg` client from npm (npm install, in this folder).
//
// Each batch is ONE transaction: inbox_claim() locks the oldest unprocessed event of each
// aggregate (other workers skip them), the effect runs, inbox_done() marks it processed, COMMIT.
// Effect and mark commit together or not at all: a crash leaves the event to be claimed again,
// so the effect happens once; an aggregate's later events wait for its earlier ones. A failing
// effect is rolled back to a savepoint and recorded with inbox_fail(); inbox_done() raising
// SQLSTATE 40001 rolls the whole transaction back (the event was not this one's to finish).
// pg runs every query in autocommit unless told BEGIN: the claim must be inside the transaction,
// or its locks end with it.
//
// The example effect (see inbox_worker.py for the tables): {"account": "a1", "amount": 5} adds
// to example_balances and writes a line to example_ledger.
//
// Usage: node inbox_worker.mjs --dsn DSN [--inbox NAME] [--batch N] [--drain]
import pg from "pg";

class TransientFailure extends Error {}
class PermanentFailure extends Error {}

function options(argv) {
  const o = { inbox: "default", batch: 100, drain: false };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === "--dsn") o.dsn = argv[++i];
    else if (a === "--inbox") o.inbox = argv[++i];
    else if (a === "--batch") o.batch = Number(argv[++i]);
    else if (a === "--drain") o.drain = true;
    else throw new Error(`unknown argument ${a}`);
  }
  if (!o.dsn) throw new Error("--dsn is required");
  if (!Number.isInteger(o.batch) || o.batch < 1) throw new Error("--batch must be an integer >= 1");
  return o;
}

// A URL (postgresql://user@host:port/db) as pg takes it, or libpq's key=value form as psql and
// psycopg2 take it (host=... port=... dbname=... user=... password=...).
function connection(dsn) {
  if (dsn.includes("://")) return { connectionString: dsn };
  const names = { host: "host", port: "port", dbname: "database", user: "user", password: "password" };
  const out = {};
  for (const m of dsn.matchAll(/(\w+)\s*=\s*('(?:[^'\\]|\\.)*'|\S+)/g)) {
    let value = m[2];
    if (value.startsWith("'")) value = value.slice(1, -1).replace(/\\(.)/g, "$1");
    if (names[m[1]]) out[names[m[1]]] = m[1] === "port" ? Number(value) : value;
  }
  return out;
}

async function applyEffect(client, seq, eventId, payload) {
  let account, amount;
  try {
    const body = JSON.parse(payload.toString("utf8"));
    if (body.account === undefined || body.amount === undefined) throw new Error("account or amount missing");
    account = String(body.account);
    amount = BigInt(body.amount);
  } catch (e) {
    throw new PermanentFailure(`payload is not {"account", "amount"}: ${e.message}`);
  }
  await client.query(
    "INSERT INTO example_balances AS b (account, balance) VALUES ($1, $2) " +
      "ON CONFLICT (account) DO UPDATE SET balance = b.balance + excluded.balance",
    [account, amount.toString()]);
  await client.query("INSERT INTO example_ledger (event_id, account, amount, seq) VALUES ($1, $2, $3, $4)",
    [eventId, account, amount.toString(), seq]);
}

// Claims, applies and marks one batch in one transaction; returns how many were claimed.
async function processBatch(client, inbox, limit) {
  await client.query("BEGIN");
  try {
    const { rows } = await client.query("SELECT seq, event_id, payload FROM inbox_claim($1, $2)", [inbox, limit]);
    for (const e of rows) {
      await client.query("SAVEPOINT effect");
      try {
        await applyEffect(client, e.seq, e.event_id, e.payload);
        await client.query("SELECT inbox_done($1)", [e.seq]);
        await client.query("RELEASE SAVEPOINT effect");
      } catch (err) {
        // Class 40 (not ours to finish, a deadlock) or the connection gone: nothing of this
        // batch commits, the whole transaction again.
        if (err.code?.startsWith("40") || err.code?.startsWith("08") || client.connectionLost) throw err;
        const kind = err instanceof TransientFailure ? "transient" : err instanceof PermanentFailure ? "permanent" : "failed";
        await client.query("ROLLBACK TO SAVEPOINT effect");
        await client.query("SELECT inbox_fail($1, $2, $3, $4)", [e.seq, String(err.message).slice(0, 2000), kind, 1000]);
      }
    }
    await client.query("COMMIT");
    return rows.length;
  } catch (err) {
    await client.query("ROLLBACK").catch(() => {});
    throw err;
  }
}

async function nothingLeft(client, inbox) {
  const { rows } = await client.query("SELECT (pending + retrying)::int AS n FROM inbox_backlog($1)", [inbox]);
  return rows[0].n === 0;
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function main() {
  const o = options(process.argv.slice(2));
  let stopping = false;
  process.on("SIGTERM", () => { stopping = true; });
  process.on("SIGINT", () => { stopping = true; });
  let client = null;
  let claimed = 0;
  let idle = 10;
  while (!stopping) {
    try {
      if (!client) {
        client = new pg.Client({ ...connection(o.dsn), application_name: "inbox-worker-node" });
        client.on("error", () => { if (client) client.connectionLost = true; });
        await client.connect();
      }
      const n = await processBatch(client, o.inbox, o.batch);
      claimed += n;
      if (n > 0) { idle = 10; continue; }
      if (o.drain && (await nothingLeft(client, o.inbox))) break;
      await sleep(idle);  // nothing due: events retrying later, or none yet
      idle = Math.min(idle * 2, 1000);
    } catch (err) {
      if (err.code?.startsWith("40")) continue;  // rolled back whole: claimed afresh
      console.error(`inbox-worker: ${err.message}; reconnecting`);
      await client?.end().catch(() => {});
      client = null;
      await sleep(1000);
    }
  }
  await client?.end().catch(() => {});
  console.error(`inbox-worker: ${claimed} events claimed`);
}

main().then(() => process.exit(0), (err) => { console.error(`inbox-worker: ${err.message}`); process.exit(2); });
