#!/usr/bin/env python3
"""A service's inbox worker in Python, through the inbox's SQL API (schema/migrations/0009).

Each batch is ONE transaction: inbox_claim() locks the oldest unprocessed event of each
aggregate (other workers skip them), the effect runs, inbox_done() marks the event processed,
COMMIT. The effect and the mark commit together or not at all, so a crash anywhere leaves the
event to be claimed again and the effect happens once; an aggregate's later events wait until
its earlier ones are done, so effects apply in order. Run as many workers as you like.

A failing effect is rolled back to a savepoint taken before it and recorded with inbox_fail():
'transient' (retry later, no attempt counted), 'failed' (an attempt counted, dead-lettered when
they run out) or 'permanent' (dead-lettered now); the rest of the batch goes on. inbox_done()
raises SQLSTATE 40001 when the event was not this transaction's to finish: the whole
transaction is rolled back and the batch claimed afresh (so is any other class 40 error, a
deadlock in the service's own effect for one).

The effect here is the example service's own: a payload {"account": "a1", "amount": 5} adds to
a balance and writes a ledger line, in these tables of the service:

    CREATE TABLE example_balances (account text PRIMARY KEY, balance bigint NOT NULL);
    CREATE TABLE example_ledger (id bigserial PRIMARY KEY, event_id text NOT NULL,
                                 account text NOT NULL, amount bigint NOT NULL, seq bigint NOT NULL);

Usage: inbox_worker.py --dsn DSN [--inbox NAME] [--batch N] [--drain]
  --drain: exit 0 once nothing is left to process (inbox_backlog: none pending or retrying;
           dead letters and what waits behind them stay for an operator); otherwise
           run until SIGTERM or SIGINT, which finish the batch in hand first.
Needs psycopg2 (Debian: python3-psycopg2).
"""
import argparse
import json
import signal
import sys
import time

import psycopg2
import psycopg2.errors


class TransientFailure(Exception):
    """The effect cannot be applied for now (a dependency away): retry, no attempt counted."""


class PermanentFailure(Exception):
    """The event can never be applied: dead-letter it now."""


def apply_effect(cur, seq, event_id, payload):
    try:
        body = json.loads(bytes(payload).decode("utf-8"))
        account, amount = str(body["account"]), int(body["amount"])
    except (TypeError, ValueError, KeyError) as e:
        raise PermanentFailure(f"payload is not {{\"account\", \"amount\"}}: {e}") from e
    cur.execute(
        "INSERT INTO example_balances AS b (account, balance) VALUES (%s, %s) "
        "ON CONFLICT (account) DO UPDATE SET balance = b.balance + excluded.balance",
        (account, amount))
    cur.execute("INSERT INTO example_ledger (event_id, account, amount, seq) VALUES (%s, %s, %s, %s)",
                (event_id, account, amount, seq))


def process_batch(conn, inbox, limit):
    """Claims, applies and marks one batch in one transaction. Returns how many were claimed."""
    with conn:  # commits on success, rolls back on any exception
        with conn.cursor() as cur:
            cur.execute("SELECT seq, event_id, payload FROM inbox_claim(%s, %s)", (inbox, limit))
            events = cur.fetchall()
            for seq, event_id, payload in events:
                cur.execute("SAVEPOINT effect")
                try:
                    apply_effect(cur, seq, event_id, payload)
                    cur.execute("SELECT inbox_done(%s)", (seq,))
                    cur.execute("RELEASE SAVEPOINT effect")
                except psycopg2.errors.TransactionRollbackError:
                    raise  # 40001 not ours to finish, 40P01 a deadlock: the whole transaction again
                except psycopg2.OperationalError:
                    raise  # the connection is gone: nothing of this batch commits
                except Exception as e:  # the effect failed: undo it, record the attempt
                    kind = ("transient" if isinstance(e, TransientFailure)
                            else "permanent" if isinstance(e, PermanentFailure) else "failed")
                    cur.execute("ROLLBACK TO SAVEPOINT effect")
                    cur.execute("SELECT inbox_fail(%s, %s, %s, %s)", (seq, str(e)[:2000], kind, 1000))
    return len(events)


def nothing_left(conn, inbox):
    with conn, conn.cursor() as cur:
        cur.execute("SELECT pending + retrying FROM inbox_backlog(%s)", (inbox,))
        return cur.fetchone()[0] == 0


def main():
    parser = argparse.ArgumentParser(description="Process an inbox's events once and in order.")
    parser.add_argument("--dsn", required=True)
    parser.add_argument("--inbox", default="default")
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--drain", action="store_true")
    args = parser.parse_args()
    if args.batch < 1:
        parser.error("--batch must be at least 1")

    stopping = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stopping.append(True))

    conn = None
    processed = 0
    idle_wait = 0.01
    while not stopping:
        try:
            if conn is None or conn.closed:
                conn = psycopg2.connect(args.dsn, application_name="inbox-worker-python")
            n = process_batch(conn, args.inbox, args.batch)
            processed += n
            if n:
                idle_wait = 0.01
                continue
            if args.drain and nothing_left(conn, args.inbox):
                break
            time.sleep(idle_wait)  # nothing due: events retrying later, or none yet
            idle_wait = min(idle_wait * 2, 1.0)
        except psycopg2.errors.TransactionRollbackError:
            continue  # rolled back whole (class 40): claimed afresh
        except psycopg2.OperationalError as e:
            print(f"inbox-worker: database away ({str(e).strip()}); retrying", file=sys.stderr)
            conn = None
            time.sleep(1)
    print(f"inbox-worker: {processed} events claimed", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
