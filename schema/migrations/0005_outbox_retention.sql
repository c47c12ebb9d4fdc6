-- Retention of published outbox rows (contract 6: bounded tables), one small batch per call.
-- SECURITY DEFINER so the relay's least-privilege role can remove published rows past the
-- window without holding DELETE on outbox_events (which would let it delete unpublished
-- rows). search_path pinned to the schema the migration ran in; PUBLIC may not execute it.
--
-- Walks the primary key from p_after_seq, p_batch rows: deletes the published rows created and
-- published before now() - p_older_than_s seconds, steps over the rest (pending and
-- dead-lettered rows are never touched). Returns how many rows it deleted and scanned, the
-- last seq scanned (the next call's p_after_seq) and whether the walk reached a row created
-- inside the window (seq follows insertion, so nothing after it is old enough: stop).
CREATE OR REPLACE FUNCTION outbox_purge_published(p_after_seq bigint, p_batch integer, p_older_than_s bigint,
                                                  OUT deleted bigint, OUT scanned bigint, OUT last_seq bigint,
                                                  OUT reached_window boolean)
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path FROM CURRENT
AS $$
DECLARE
    cutoff timestamptz := now() - p_older_than_s * interval '1 second';
BEGIN
    IF p_batch < 1 OR p_older_than_s < 0 THEN
        RAISE EXCEPTION 'outbox_purge_published: batch must be >= 1 and older_than_s >= 0, got % and %',
            p_batch, p_older_than_s USING ERRCODE = '22023';
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

REVOKE EXECUTE ON FUNCTION outbox_purge_published(bigint, integer, bigint) FROM PUBLIC;
