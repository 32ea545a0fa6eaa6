-- The trail as `AuditService` reads it: the records of `audit_log` and those a service's
-- own rows already are (settlement's claims record their settlement), `own_audit_records`,
-- which such a service replaces (here: none). `audit_trail` is both together. Every
-- record's id comes from one sequence, `audit_log_ids`, so the trail reads in the order it
-- was written.
DO $$
BEGIN
    EXECUTE format('ALTER SEQUENCE %s RENAME TO audit_log_ids',
                   pg_get_serial_sequence(quote_ident(current_schema()) || '.audit_log', 'id'));
END $$;

CREATE VIEW own_audit_records AS
SELECT id, at, caller, method, subject, outcome FROM audit_log WHERE false;

CREATE VIEW audit_trail AS
SELECT id, at, caller, method, subject, outcome FROM audit_log
UNION ALL
SELECT id, at, caller, method, subject, outcome FROM own_audit_records;
