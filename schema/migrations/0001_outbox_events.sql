-- outbox_events: the table a service writes its events into, in the same transaction as
-- its business rows. The relay reads unpublished rows in seq order and marks them.
-- Safe to run twice; works with any migration tool (plain SQL, no tool-specific syntax).

CREATE TABLE IF NOT EXISTS outbox_events (
    -- Insertion order. Per-aggregate order follows seq; consumers deduplicate on id.
    seq              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    -- Event id: a UUID, never a sequence value (a sequence can repeat after a failover).
    id               uuid        NOT NULL DEFAULT gen_random_uuid(),
    aggregate_type   text        NOT NULL CHECK (aggregate_type <> ''),
    aggregate_id     text        NOT NULL,
    event_type       text        NOT NULL,
    -- Bytes, published unchanged: JSON (UTF-8), Avro, Protobuf...
    payload          bytea,
    -- Extra Kafka headers: a flat JSON object of name -> value.
    headers          jsonb       NOT NULL DEFAULT '{}'::jsonb CHECK (jsonb_typeof(headers) = 'object'),
    -- Optional per-row topic; overrides the relay's topic template.
    topic            text,
    created_at       timestamptz NOT NULL DEFAULT now(),
    published_at     timestamptz,
    -- Retry bookkeeping, written by the relay only.
    attempts         integer     NOT NULL DEFAULT 0,
    next_attempt_at  timestamptz,
    last_error       text,
    dead_lettered_at timestamptz,
    CONSTRAINT outbox_events_id_key UNIQUE (id)
);

-- The relay's work list: small, because rows leave it once published or dead-lettered.
CREATE INDEX IF NOT EXISTS outbox_events_pending
    ON outbox_events (seq)
    WHERE published_at IS NULL AND dead_lettered_at IS NULL;

-- Dead-lettered rows hold back the later events of their aggregate until an operator acts.
CREATE INDEX IF NOT EXISTS outbox_events_dead
    ON outbox_events (aggregate_type, aggregate_id)
    WHERE dead_lettered_at IS NOT NULL;

-- A queue table churns: vacuum it early rather than by the 20% default.
ALTER TABLE outbox_events SET (
    autovacuum_vacuum_scale_factor = 0.01,
    autovacuum_vacuum_threshold = 1000,
    autovacuum_analyze_scale_factor = 0.02
);

-- Convenience for services in any language: one call inside their own transaction.
-- The payload overloads take bytes, or JSON (stored as its UTF-8 text).
CREATE OR REPLACE FUNCTION outbox_publish(
    p_aggregate_type text,
    p_aggregate_id   text,
    p_event_type     text,
    p_payload        bytea,
    p_headers        jsonb DEFAULT '{}'::jsonb,
    p_topic          text DEFAULT NULL,
    p_id             uuid DEFAULT gen_random_uuid())
RETURNS uuid
LANGUAGE sql
AS $$
    INSERT INTO outbox_events (id, aggregate_type, aggregate_id, event_type, payload, headers, topic)
    VALUES (p_id, p_aggregate_type, p_aggregate_id, p_event_type, p_payload,
            COALESCE(p_headers, '{}'::jsonb), p_topic)
    RETURNING id;
$$;

CREATE OR REPLACE FUNCTION outbox_publish(
    p_aggregate_type text,
    p_aggregate_id   text,
    p_event_type     text,
    p_payload        jsonb,
    p_headers        jsonb DEFAULT '{}'::jsonb,
    p_topic          text DEFAULT NULL,
    p_id             uuid DEFAULT gen_random_uuid())
RETURNS uuid
LANGUAGE sql
AS $$
    SELECT outbox_publish(p_aggregate_type, p_aggregate_id, p_event_type,
                          convert_to(p_payload::text, 'UTF8'), p_headers, p_topic, p_id);
$$;
