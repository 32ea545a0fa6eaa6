-- Double entry: every entry's legs sum to zero, entries are immutable, balances are
-- maintained in the same transaction as the legs.
CREATE TABLE accounts (
    account TEXT           PRIMARY KEY,
    balance NUMERIC(20, 2) NOT NULL DEFAULT 0
);

CREATE TABLE journal_entries (
    entry_id           BIGSERIAL   PRIMARY KEY,
    event_id           UUID        NOT NULL UNIQUE,
    kind               TEXT        NOT NULL,
    insured_province   TEXT        NOT NULL,
    treatment_province TEXT        NOT NULL,
    treatment_region   TEXT        NOT NULL,
    claim_id           TEXT        NOT NULL,
    original_event_id  UUID,
    fund               NUMERIC(20, 2) NOT NULL,
    serious_illness    NUMERIC(20, 2) NOT NULL,
    assistance         NUMERIC(20, 2) NOT NULL,
    personal_account   NUMERIC(20, 2) NOT NULL,
    posted_at          TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX journal_entries_by_pair ON journal_entries (insured_province, treatment_province, posted_at);

CREATE TABLE journal_legs (
    entry_id BIGINT         NOT NULL REFERENCES journal_entries (entry_id),
    account  TEXT           NOT NULL,
    amount   NUMERIC(20, 2) NOT NULL
);
CREATE INDEX journal_legs_by_entry ON journal_legs (entry_id);

CREATE FUNCTION journal_is_immutable() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'journal entries are immutable; post a correcting entry';
END $$;
CREATE TRIGGER journal_entries_immutable BEFORE UPDATE OR DELETE ON journal_entries
    FOR EACH ROW EXECUTE FUNCTION journal_is_immutable();
CREATE TRIGGER journal_legs_immutable BEFORE UPDATE OR DELETE ON journal_legs
    FOR EACH ROW EXECUTE FUNCTION journal_is_immutable();
