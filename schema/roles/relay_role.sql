-- Least-privilege role for outbox-relay. Run as the owner of the outbox tables, e.g.
--   psql -v relay_password="'...'" -v schema=orders -f schema/roles/relay_role.sql
-- (or create the role without a password and use a client certificate / passfile). Without
-- -v schema the grants go to the connection's current schema: name the one `migrate` used
-- (database.schema) when it is not the first on the search_path.
-- The relay may read outbox_events and write only its bookkeeping columns; it has no
-- access to business tables and no superuser, createdb, createrole or replication.

DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'outbox_relay') THEN
        CREATE ROLE outbox_relay LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOINHERIT;
    END IF;
END
$$;

\if :{?relay_password}
ALTER ROLE outbox_relay PASSWORD :relay_password;
\endif

\if :{?schema}
SELECT set_config('search_path', :'schema', false) AS search_path \gset
\endif
DO $$
BEGIN
    EXECUTE format('GRANT USAGE ON SCHEMA %I TO outbox_relay', current_schema());
END
$$;
GRANT SELECT ON outbox_events TO outbox_relay;
GRANT UPDATE (published_at, attempts, next_attempt_at, last_error, dead_lettered_at)
    ON outbox_events TO outbox_relay;
GRANT SELECT, UPDATE (listening, changed_at) ON outbox_relay_wakeup TO outbox_relay;
-- The seq sequence's last value (read, never advanced): which prefix of the outbox can no
-- longer change (migration 0007).
DO $$
BEGIN
    EXECUTE format('GRANT SELECT ON SEQUENCE %s TO outbox_relay', pg_get_serial_sequence('outbox_events', 'seq'));
END
$$;
-- Ownership of lanes when several instances share the outbox (its own bookkeeping tables).
GRANT SELECT, UPDATE (owner, epoch, lease_until, acquired_at, renewed_at) ON outbox_relay_lanes TO outbox_relay;
GRANT SELECT, INSERT, UPDATE, DELETE ON outbox_relay_instances TO outbox_relay;
-- Retention (retention.published_hours): removes only published rows past the window.
GRANT EXECUTE ON FUNCTION outbox_purge_published(bigint, integer, bigint) TO outbox_relay;

-- Only when the relay runs with relay.mark_mode: delete:
-- GRANT DELETE ON outbox_events TO outbox_relay;
