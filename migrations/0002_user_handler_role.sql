-- The role the user-handler plugin logs in as (`grants.sql.role` in polyhost.toml), with
-- exactly what it needs: read and write its tables, never delete a row, never change the
-- schema. `polyhost migrate` sets its password afterwards.

DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'user_handler') THEN
        CREATE ROLE user_handler LOGIN;
    END IF;
END
$$;

GRANT USAGE ON SCHEMA streaming TO user_handler;
GRANT SELECT, INSERT, UPDATE ON streaming.users, streaming.user_preferences,
    streaming.subscriptions TO user_handler;
-- Payments and the ledger are append-only.
GRANT SELECT, INSERT ON streaming.payments, streaming.processed_events TO user_handler;
