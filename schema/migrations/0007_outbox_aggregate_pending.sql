-- Contract 2 while the relay reads ahead of the batch it has in flight (seq > the batch's
-- last): an event written after an earlier one of its aggregate committed is never delivered
-- before it, even when that earlier one committed late, behind the cursor. For a row read
-- ahead the relay may count the unpublished rows of its aggregate behind the cursor; one more
-- than it has in flight committed late, and the row waits for it. This index answers that
-- from the aggregate's pending entries instead of a scan of the whole work list.
--
-- Only pending rows are indexed (a mark leaves it), so it stays small. Building it scans the
-- table once and blocks inserts meanwhile: on a large table create it first with
--   CREATE INDEX CONCURRENTLY outbox_events_aggregate_pending ON outbox_events
--     (aggregate_type, aggregate_id, seq) WHERE published_at IS NULL AND dead_lettered_at IS NULL;
-- and this migration then finds it present.
CREATE INDEX IF NOT EXISTS outbox_events_aggregate_pending
    ON outbox_events (aggregate_type, aggregate_id, seq)
    WHERE published_at IS NULL AND dead_lettered_at IS NULL;

-- Most read-ahead rows need no such count at all: the relay knows which prefix of seq values
-- can no longer change. It samples the sequence's last value M together with a bound N above
-- every transaction id then in use; once the oldest running transaction is at least N, every
-- row with seq <= M has committed or aborted, and no row there can commit late. Rows are
-- counted only above the prefix that was settled when the relay last scanned from the head.
-- Two things make that sound:
--
-- 1. A producer's transaction has its transaction id before it takes a seq (an INSERT takes
--    the seq, then the id, so for an instant it would hold a seq that no snapshot shows):
--    a statement trigger assigns the id first. Rows inserted while triggers are disabled
--    (session_replication_role = replica) lose this guarantee.
CREATE OR REPLACE FUNCTION outbox_events_assign_xid() RETURNS trigger
LANGUAGE plpgsql
AS $$
BEGIN
    PERFORM pg_current_xact_id();
    RETURN NULL;
END
$$;

DROP TRIGGER IF EXISTS outbox_events_assign_xid ON outbox_events;
CREATE TRIGGER outbox_events_assign_xid
    BEFORE INSERT ON outbox_events
    FOR EACH STATEMENT EXECUTE FUNCTION outbox_events_assign_xid();

-- 2. A row made unpublished again (replay, requeue of a dead letter, moved to another
--    aggregate) can appear at any seq: such an update counts in outbox_relay_wakeup.reopened,
--    once per transaction, and a relay that sees the count change counts every row again.
ALTER TABLE outbox_relay_wakeup ADD COLUMN IF NOT EXISTS reopened bigint NOT NULL DEFAULT 0;

-- SECURITY DEFINER so an operator's role needs no privilege on outbox_relay_wakeup.
CREATE OR REPLACE FUNCTION outbox_events_reopened() RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path FROM CURRENT
AS $$
BEGIN
    IF current_setting('outbox.reopened_in', true) IS DISTINCT FROM pg_current_xact_id()::text THEN
        UPDATE outbox_relay_wakeup SET reopened = reopened + 1;
        PERFORM set_config('outbox.reopened_in', pg_current_xact_id()::text, true);
    END IF;
    RETURN NULL;
END
$$;

DROP TRIGGER IF EXISTS outbox_events_reopened ON outbox_events;
CREATE TRIGGER outbox_events_reopened
    AFTER UPDATE ON outbox_events
    FOR EACH ROW
    WHEN (NEW.published_at IS NULL AND NEW.dead_lettered_at IS NULL
          AND (OLD.published_at IS NOT NULL OR OLD.dead_lettered_at IS NOT NULL
               OR OLD.aggregate_type IS DISTINCT FROM NEW.aggregate_type
               OR OLD.aggregate_id IS DISTINCT FROM NEW.aggregate_id))
    EXECUTE FUNCTION outbox_events_reopened();
