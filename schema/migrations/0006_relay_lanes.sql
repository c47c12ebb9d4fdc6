-- Ownership for several relay instances on one outbox (contract 4: one publisher per
-- aggregate at a time). Aggregates hash into a fixed number of lanes; each lane is leased to
-- at most one instance, with an expiry measured by this database's clock. Instances renew
-- their leases, take free or expired lanes up to a fair share of the live instances, and hand
-- lanes back when others join or when they stop. A relay marks a row published only while it
-- holds the row's lane (the mark statement joins this table): an instance that lost a lane is
-- fenced by its own writes matching no row.

-- The lane of an aggregate. The lane count (64) is part of the mapping and fixed: every
-- instance must agree on it, so it lives here and not in any instance's configuration.
CREATE OR REPLACE FUNCTION outbox_lane(p_aggregate_type text, p_aggregate_id text)
RETURNS integer
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$ SELECT ((hashtext(p_aggregate_type || chr(31) || p_aggregate_id)::bigint & 2147483647) % 64)::integer $$;

CREATE TABLE IF NOT EXISTS outbox_relay_lanes (
    lane         integer PRIMARY KEY CHECK (lane >= 0 AND lane < 64),
    owner        text,                                   -- instance id; NULL: free
    epoch        bigint NOT NULL DEFAULT 0,              -- +1 at every acquisition (a fencing token)
    lease_until  timestamptz NOT NULL DEFAULT '-infinity',
    acquired_at  timestamptz,
    renewed_at   timestamptz
) WITH (fillfactor = 50);  -- renewed every few seconds: room for HOT updates

INSERT INTO outbox_relay_lanes (lane) SELECT generate_series(0, 63) ON CONFLICT (lane) DO NOTHING;

-- Live instances and when they were last seen; the fair share is 64 / (live instances).
CREATE TABLE IF NOT EXISTS outbox_relay_instances (
    instance     text PRIMARY KEY,
    host         text NOT NULL,
    pid          integer NOT NULL,
    started_at   timestamptz NOT NULL DEFAULT now(),
    seen_at      timestamptz NOT NULL DEFAULT now(),
    expires_at   timestamptz NOT NULL
) WITH (fillfactor = 50);
