-- Tables that grow with the traffic are partitioned by China month (DESIGN.md §1; the
-- service's `platform::partitions`): one partition per month, named <table>_<yyyy>_<mm>,
-- from midnight in China on the first of the month. This function creates those missing
-- between two instants; migrations and the services' upkeep both call it. `per_partition`
-- holds statements run on each new partition, '{p}' standing for its name.
CREATE FUNCTION create_month_partitions(parent text, lo timestamptz, hi timestamptz,
                                        per_partition text[] DEFAULT '{}')
RETURNS SETOF text LANGUAGE plpgsql AS $$
DECLARE
    month date := date_trunc('month', lo AT TIME ZONE INTERVAL '+08:00')::date;
    last  date := (hi AT TIME ZONE INTERVAL '+08:00')::date;
    name  text;
    statement text;
BEGIN
    WHILE month <= last LOOP
        name := parent || '_' || to_char(month, 'YYYY_MM');
        -- Another replica creating the same partition waits here, then finds it.
        PERFORM pg_advisory_xact_lock(hashtext(current_schema() || '.partition.' || name));
        IF to_regclass(name) IS NULL THEN
            EXECUTE format('CREATE TABLE %I PARTITION OF %I FOR VALUES FROM (%L) TO (%L)', name, parent,
                           month::timestamp AT TIME ZONE INTERVAL '+08:00',
                           (month + 1 * interval '1 month')::timestamp AT TIME ZONE INTERVAL '+08:00');
            FOREACH statement IN ARRAY per_partition LOOP
                EXECUTE replace(statement, '{p}', quote_ident(name));
            END LOOP;
            RETURN NEXT name;
        END IF;
        month := month + interval '1 month';
    END LOOP;
END $$;

-- The audit trail by month. Old months are detached for archiving, never deleted here.
ALTER TABLE audit_log RENAME TO audit_log_unpartitioned;
ALTER INDEX audit_log_by_caller RENAME TO audit_log_unpartitioned_by_caller;
ALTER INDEX audit_log_by_outcome RENAME TO audit_log_unpartitioned_by_outcome;
ALTER TABLE audit_log_unpartitioned RENAME CONSTRAINT audit_log_pkey TO audit_log_unpartitioned_pkey;

CREATE TABLE audit_log (
    id      BIGINT GENERATED ALWAYS AS IDENTITY,
    at      TIMESTAMPTZ NOT NULL,
    caller  TEXT NOT NULL,
    method  TEXT NOT NULL,
    subject TEXT NOT NULL DEFAULT '',
    outcome TEXT NOT NULL,
    PRIMARY KEY (id, at)
) PARTITION BY RANGE (at);
CREATE INDEX audit_log_by_caller ON audit_log (caller, id);
-- Looked up by outcome are the refusals; the OKs (nearly every row) stay out of the index.
CREATE INDEX audit_log_by_outcome ON audit_log (outcome, id) WHERE outcome <> 'OK';

SELECT create_month_partitions('audit_log', COALESCE((SELECT min(at) FROM audit_log_unpartitioned), now()) - interval '1 month',
                               now() + interval '2 months');
INSERT INTO audit_log (at, caller, method, subject, outcome)
SELECT at, caller, method, subject, outcome FROM audit_log_unpartitioned ORDER BY id;
DROP TABLE audit_log_unpartitioned;

CREATE TRIGGER audit_log_append_only BEFORE UPDATE OR DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION audit_log_is_append_only();
