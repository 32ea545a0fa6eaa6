-- A service's own records of one caller, for the trail read by caller: here those of
-- `own_audit_records`; a service whose own records can be found by caller along an index
-- replaces it (settlement: the claims of the caller's province, by region).
CREATE FUNCTION own_audit_records_of(of_caller text)
RETURNS TABLE (id bigint, at timestamptz, caller text, method text, subject text, outcome text)
LANGUAGE sql STABLE AS $$
    SELECT r.id, r.at, r.caller, r.method, r.subject, r.outcome FROM own_audit_records r WHERE r.caller = of_caller
$$;
