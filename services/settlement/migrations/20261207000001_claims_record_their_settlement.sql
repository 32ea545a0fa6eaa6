-- A settled claim's row is the audit record of its settlement (nothing stored twice): who
-- settled it is the treatment region's provincial platform (no other caller may), when is
-- `settled_at`, what is the claim. `audit_id` is the record's id in the trail, from the
-- trail's own sequence; a claim settled outside the access layer (no caller) has none, as
-- it would have no audit record. Other writes and every refusal stay in `audit_log`.
ALTER TABLE claims ADD COLUMN audit_id BIGINT;
CREATE INDEX claims_by_audit_id ON claims (audit_id) WHERE audit_id IS NOT NULL;

-- What the record says never changes; the row is never deleted (old months are detached).
CREATE FUNCTION claims_record_is_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'a settled claim is its audit record: append-only';
END $$;
CREATE TRIGGER claims_record_append_only
    BEFORE UPDATE OF treatment_region, claim_id, settled_at, audit_id OR DELETE ON claims
    FOR EACH ROW EXECUTE FUNCTION claims_record_is_append_only();

-- The caller and method are those `claim::recorded_by_row` requires of a claim recorded here.
CREATE OR REPLACE VIEW own_audit_records AS
SELECT audit_id AS id, settled_at AS at, 'province:' || left(treatment_region, 2) || '0000' AS caller,
       '/clearinghouse.settlement.v1.SettlementService/Settle'::text AS method,
       'claim ' || treatment_region || '/' || claim_id AS subject, 'OK'::text AS outcome
FROM claims WHERE audit_id IS NOT NULL;
