-- inbox_requeue touched skipped events too: inbox_skip marks a dead letter processed and keeps
-- dead_lettered_at as the record, and a requeue of it then cleared that record and reported it
-- requeued, though nothing would ever process it again. Only unprocessed dead letters are
-- requeued now.
CREATE OR REPLACE FUNCTION inbox_requeue(p_inbox text, p_seqs bigint[] DEFAULT NULL)
RETURNS SETOF bigint
LANGUAGE sql
AS $$
    UPDATE inbox_events SET dead_lettered_at = NULL, attempts = 0, next_attempt_at = NULL
    WHERE inbox = p_inbox AND dead_lettered_at IS NOT NULL AND processed_at IS NULL
      AND (p_seqs IS NULL OR seq = ANY (p_seqs))
    RETURNING seq
$$;
