-- idempotency_keys: request-level retries. The same key with the same request returns the
-- stored outcome; the same key with a different request is a conflict.

CREATE TABLE IF NOT EXISTS idempotency_keys (
    key          text        PRIMARY KEY,
    request_hash text        NOT NULL,
    status       text        NOT NULL CHECK (status IN ('in_progress', 'completed')),
    response_ref text,
    created_at   timestamptz NOT NULL DEFAULT now(),
    expires_at   timestamptz NOT NULL
);

CREATE INDEX IF NOT EXISTS idempotency_keys_expires_at ON idempotency_keys (expires_at);
