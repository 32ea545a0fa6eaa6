-- Who overrode a long-term filing's lock period, and why (the time is lock_overridden_at).
ALTER TABLE filings ADD COLUMN lock_overridden_by TEXT;
ALTER TABLE filings ADD COLUMN lock_override_reason TEXT;
-- At most one long-term filing covers a person on any date: revoked ones included, so the
-- check of a new one's start against the previous one's end finds them by person.
CREATE INDEX long_term_by_person ON filings (insured_region, person_id) WHERE long_term;
