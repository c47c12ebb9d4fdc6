-- consumer_inbox: one row per (consumer, event) a consumer has processed, written in the same
-- transaction as the consumer's effect; a redelivered event finds its row and is skipped.

CREATE TABLE IF NOT EXISTS consumer_inbox (
    consumer     text        NOT NULL,
    event_id     uuid        NOT NULL,
    processed_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer, event_id)
);

-- Retention deletes by age in small batches.
CREATE INDEX IF NOT EXISTS consumer_inbox_processed_at ON consumer_inbox (processed_at);
