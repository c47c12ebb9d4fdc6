-- Wake-up hint for an idle relay. NOTIFY takes a database-wide lock at commit, so a NOTIFY
-- in every producer transaction would serialise commits under load. Instead the relay sets
-- `listening` only while it has found the outbox empty; producers notify only then.
-- NOTIFY is a hint: the relay still polls at its configured interval.

CREATE TABLE IF NOT EXISTS outbox_relay_wakeup (
    singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    listening boolean NOT NULL DEFAULT false,
    changed_at timestamptz NOT NULL DEFAULT now()
);
INSERT INTO outbox_relay_wakeup (singleton) VALUES (true) ON CONFLICT DO NOTHING;

-- SECURITY DEFINER so producers need no privilege on outbox_relay_wakeup;
-- search_path pinned to the schema the migration ran in.
CREATE OR REPLACE FUNCTION outbox_events_wakeup() RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path FROM CURRENT
AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM outbox_relay_wakeup WHERE listening) THEN
        PERFORM pg_notify('outbox_events', '');
    END IF;
    RETURN NULL;
END
$$;

DROP TRIGGER IF EXISTS outbox_events_wakeup ON outbox_events;
CREATE TRIGGER outbox_events_wakeup
    AFTER INSERT ON outbox_events
    FOR EACH STATEMENT EXECUTE FUNCTION outbox_events_wakeup();
