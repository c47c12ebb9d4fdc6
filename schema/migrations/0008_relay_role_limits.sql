-- What the relay's least-privilege role can do to history, bounded in the database itself
-- (the role needs UPDATE of published_at to mark rows, and EXECUTE of the purge function).
--
-- 1. published_at is the time the row was marked: a row marked by any other role than the
--    table's owner (or a superuser) gets its marking transaction's now(), whatever value the
--    statement wrote. So `UPDATE ... SET published_at = now() - interval '1 day'` followed by
--    a purge cannot remove a row that was pending a moment ago. The relay marks with now(),
--    which the trigger's WHEN clause lets through without a call.
CREATE OR REPLACE FUNCTION outbox_events_stamp_published() RETURNS trigger
LANGUAGE plpgsql
AS $$
BEGIN
    IF NOT pg_has_role(current_user, (SELECT c.relowner FROM pg_class c WHERE c.oid = TG_RELID), 'USAGE') THEN
        NEW.published_at := now();
    END IF;
    RETURN NEW;
END
$$;

DROP TRIGGER IF EXISTS outbox_events_stamp_published ON outbox_events;
CREATE TRIGGER outbox_events_stamp_published
    BEFORE INSERT OR UPDATE OF published_at ON outbox_events
    FOR EACH ROW
    WHEN (NEW.published_at IS NOT NULL AND NEW.published_at <> now())
    EXECUTE FUNCTION outbox_events_stamp_published();

-- 2. The purge refuses a window under its minimum: the function's own setting
--    outbox_relay.min_purge_window_s (default 3600, the shortest retention.published_hours).
--    A caller cannot lower it (a function-level SET wins over the session's); the owner can:
--      ALTER FUNCTION outbox_purge_published(bigint, integer, bigint)
--          SET outbox_relay.min_purge_window_s = '86400';
CREATE OR REPLACE FUNCTION outbox_purge_published(p_after_seq bigint, p_batch integer, p_older_than_s bigint,
                                                  OUT deleted bigint, OUT scanned bigint, OUT last_seq bigint,
                                                  OUT reached_window boolean)
LANGUAGE plpgsql
SECURITY DEFINER
AS $$
DECLARE
    min_window_s bigint := coalesce(nullif(current_setting('outbox_relay.min_purge_window_s', true), '')::bigint, 3600);
    cutoff timestamptz := now() - p_older_than_s * interval '1 second';
BEGIN
    IF p_batch < 1 OR p_older_than_s < min_window_s THEN
        RAISE EXCEPTION 'outbox_purge_published: batch must be >= 1 and older_than_s >= % (outbox_relay.min_purge_window_s), got % and %',
            min_window_s, p_batch, p_older_than_s USING ERRCODE = '22023';
    END IF;
    WITH scan AS (
             SELECT e.seq, e.created_at, e.published_at FROM outbox_events e
             WHERE e.seq > p_after_seq ORDER BY e.seq LIMIT p_batch),
         gone AS (
             DELETE FROM outbox_events e USING scan s
             WHERE e.seq = s.seq AND s.published_at < cutoff AND e.published_at < cutoff
             RETURNING 1)
    SELECT (SELECT count(*) FROM gone), (SELECT count(*) FROM scan), (SELECT max(seq) FROM scan),
           coalesce((SELECT bool_or(created_at >= cutoff) FROM scan), false)
        INTO deleted, scanned, last_seq, reached_window;
END
$$;
ALTER FUNCTION outbox_purge_published(bigint, integer, bigint) SET outbox_relay.min_purge_window_s = '3600';
REVOKE EXECUTE ON FUNCTION outbox_purge_published(bigint, integer, bigint) FROM PUBLIC;

-- 3. Every SECURITY DEFINER function resolves names in the outbox's schema and then pg_temp
--    (last: a caller's temporary table can never shadow one of ours).
DO $$
DECLARE
    f regprocedure;
BEGIN
    FOR f IN SELECT p.oid::regprocedure FROM pg_proc p
             WHERE p.pronamespace = current_schema()::regnamespace AND p.prosecdef
               AND p.proname IN ('outbox_purge_published', 'outbox_events_wakeup', 'outbox_events_reopened')
    LOOP
        EXECUTE format('ALTER FUNCTION %s SET search_path = %I, pg_temp', f, current_schema());
    END LOOP;
END
$$;
