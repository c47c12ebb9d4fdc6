-- What a claim and a backlog reading cost grew with the rows queued behind aggregates' heads,
-- not with the aggregates. inbox_claim walked the pending rows in seq order until it had
-- p_limit heads: behind one aggregate's 40,000 queued events every claim read all of them
-- (80,000 tuples, about 2.5 s, for one event), and workers whose heads were locked read them
-- all for nothing. inbox_backlog probed each open row's aggregate for a dead letter, scanning
-- the aggregate's open rows each time: 6,000 rows behind one dead letter read 108 million
-- tuples (34 s), every 5 s from the sidecar's metrics.

-- Keyless pending rows are claimable whatever sits before them: an index of their own lets a
-- claim find them past a long queue without walking it. Keyed rows never enter it.
CREATE INDEX IF NOT EXISTS inbox_events_keyless_pending
    ON inbox_events (inbox, seq) WHERE key IS NULL AND processed_at IS NULL AND dead_lettered_at IS NULL;

-- Claims up to p_limit events to process now: for each aggregate only its oldest unprocessed
-- event, when it is due and not dead-lettered, and any due keyless event, locked FOR UPDATE
-- SKIP LOCKED in the caller's transaction (see 0009: call it, apply the effects and
-- inbox_done in ONE transaction).
-- First the oldest pending rows, a window of at most 10 * p_limit + 1,000: when most of them
-- are heads (many aggregates, short queues: the usual case) the claim ends there. When the
-- window held fewer than p_limit claimable heads and did not hold every pending row, the
-- heads are taken from the aggregate index, one probe per aggregate with an unprocessed row
-- (a skip scan), plus the keyless events from their own index. Order across aggregates is
-- oldest first within each pass; within an aggregate it is the only one there is.
CREATE OR REPLACE FUNCTION inbox_claim(p_inbox text, p_limit integer DEFAULT 100)
RETURNS SETOF inbox_events
LANGUAGE plpgsql
VOLATILE
AS $$
DECLARE
    window_rows integer;
    taken bigint[] := '{}';
    r inbox_events%ROWTYPE;
BEGIN
    IF p_limit IS NULL OR p_limit <= 0 THEN
        RETURN;
    END IF;
    window_rows := least(p_limit, 100000) * 10 + 1000;
    FOR r IN
        SELECT e.* FROM inbox_events e
        WHERE e.seq IN (SELECT w.seq FROM inbox_events w
                        WHERE w.inbox = p_inbox AND w.processed_at IS NULL AND w.dead_lettered_at IS NULL
                        ORDER BY w.seq LIMIT window_rows)
          AND e.inbox = p_inbox AND e.processed_at IS NULL AND e.dead_lettered_at IS NULL
          AND (e.next_attempt_at IS NULL OR e.next_attempt_at <= now())
          AND (e.key IS NULL OR e.seq = (SELECT min(b.seq) FROM inbox_events b
                                         WHERE b.inbox = e.inbox AND b.topic = e.topic AND b.key = e.key
                                           AND b.processed_at IS NULL))
        ORDER BY e.seq
        LIMIT p_limit
        FOR UPDATE OF e SKIP LOCKED
    LOOP
        taken := taken || r.seq;
        RETURN NEXT r;
    END LOOP;
    IF cardinality(taken) >= p_limit THEN
        RETURN;
    END IF;
    -- Did the window hold every pending row? Then there is nothing more to find.
    IF (SELECT count(*) FROM (SELECT 1 FROM inbox_events w
                              WHERE w.inbox = p_inbox AND w.processed_at IS NULL AND w.dead_lettered_at IS NULL
                              LIMIT window_rows + 1) x) <= window_rows THEN
        RETURN;
    END IF;
    RETURN QUERY
    WITH RECURSIVE heads(topic, key, seq) AS (
        (SELECT b.topic, b.key, b.seq FROM inbox_events b
         WHERE b.inbox = p_inbox AND b.processed_at IS NULL AND b.key IS NOT NULL
         ORDER BY b.topic, b.key, b.seq LIMIT 1)
        UNION ALL
        SELECT n.topic, n.key, n.seq FROM heads h
        CROSS JOIN LATERAL (SELECT b.topic, b.key, b.seq FROM inbox_events b
                            WHERE b.inbox = p_inbox AND b.processed_at IS NULL AND b.key IS NOT NULL
                              AND (b.topic, b.key) > (h.topic, h.key)
                            ORDER BY b.topic, b.key, b.seq LIMIT 1) n
    ),
    candidates AS (
        SELECT h.seq FROM heads h
        UNION ALL
        (SELECT k.seq FROM inbox_events k
         WHERE k.inbox = p_inbox AND k.key IS NULL AND k.processed_at IS NULL AND k.dead_lettered_at IS NULL
           AND k.seq <> ALL (taken)
         ORDER BY k.seq LIMIT p_limit)
    )
    SELECT e.* FROM inbox_events e
    WHERE e.seq IN (SELECT c.seq FROM candidates c)
      AND e.seq <> ALL (taken)
      AND e.inbox = p_inbox AND e.processed_at IS NULL AND e.dead_lettered_at IS NULL
      AND (e.next_attempt_at IS NULL OR e.next_attempt_at <= now())
      AND (e.key IS NULL OR e.seq = (SELECT min(b.seq) FROM inbox_events b
                                     WHERE b.inbox = e.inbox AND b.topic = e.topic AND b.key = e.key
                                       AND b.processed_at IS NULL))
    ORDER BY e.seq
    LIMIT p_limit - cardinality(taken)
    FOR UPDATE OF e SKIP LOCKED;
END
$$;

-- The same counts as 0009's, in one pass over the open rows: each aggregate's first dead letter
-- is found once (grouped), and the rows after it are held back.
CREATE OR REPLACE FUNCTION inbox_backlog(p_inbox text, OUT pending bigint, OUT retrying bigint,
                                         OUT dead_lettered bigint, OUT held_back bigint,
                                         OUT oldest_age_s double precision)
LANGUAGE sql
STABLE
AS $$
    WITH open AS MATERIALIZED (
        SELECT e.seq, e.topic, e.key, e.received_at, e.next_attempt_at, e.dead_lettered_at
        FROM inbox_events e WHERE e.inbox = p_inbox AND e.processed_at IS NULL),
    first_dead AS (
        SELECT o.topic, o.key, min(o.seq) AS seq FROM open o
        WHERE o.dead_lettered_at IS NOT NULL AND o.key IS NOT NULL
        GROUP BY o.topic, o.key),
    marked AS (
        SELECT o.received_at, o.next_attempt_at, o.dead_lettered_at,
               o.dead_lettered_at IS NULL AND coalesce(o.seq > d.seq, false) AS behind
        FROM open o LEFT JOIN first_dead d ON d.topic = o.topic AND d.key = o.key)
    SELECT count(*) FILTER (WHERE dead_lettered_at IS NULL AND NOT behind
                              AND (next_attempt_at IS NULL OR next_attempt_at <= now())),
           count(*) FILTER (WHERE dead_lettered_at IS NULL AND NOT behind AND next_attempt_at > now()),
           count(*) FILTER (WHERE dead_lettered_at IS NOT NULL),
           count(*) FILTER (WHERE behind),
           coalesce(extract(epoch FROM now() - min(received_at) FILTER (WHERE dead_lettered_at IS NULL)), 0)::float8
    FROM marked
$$;
