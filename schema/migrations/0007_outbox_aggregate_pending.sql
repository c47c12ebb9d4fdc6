-- The unpublished rows of each aggregate, in seq order. While the relay reads ahead of the
-- batch it has in flight (seq > the batch's last), it asks for each row it reads how many
-- unpublished rows of that row's aggregate lie behind the cursor; one it has not seen there
-- committed late, and the row waits for it (contract 2: an event written after an earlier one
-- of its aggregate committed is never delivered before it). This index answers that question
-- from the aggregate's few pending entries instead of a scan of the whole work list.
--
-- Only pending rows are indexed (a mark leaves it), so it stays small. Building it scans the
-- table once and blocks inserts meanwhile: on a large table create it first with
--   CREATE INDEX CONCURRENTLY outbox_events_aggregate_pending ON outbox_events
--     (aggregate_type, aggregate_id, seq) WHERE published_at IS NULL AND dead_lettered_at IS NULL;
-- and this migration then finds it present.
CREATE INDEX IF NOT EXISTS outbox_events_aggregate_pending
    ON outbox_events (aggregate_type, aggregate_id, seq)
    WHERE published_at IS NULL AND dead_lettered_at IS NULL;
