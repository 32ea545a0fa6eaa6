-- The trail as `AuditService` reads it: `audit_trail`, the records of `audit_log` and, in a
-- service whose own rows already record a write (settlement's claims record their
-- settlement), those rows too: the service replaces the view. Every record's id comes from
-- one sequence, `audit_log_ids`, so the trail reads in the order it was written.
DO $$
BEGIN
    EXECUTE format('ALTER SEQUENCE %s RENAME TO audit_log_ids',
                   pg_get_serial_sequence(quote_ident(current_schema()) || '.audit_log', 'id'));
END $$;

CREATE VIEW audit_trail AS
SELECT id, at, caller, method, subject, outcome FROM audit_log;
