-- Every posted claim and reversal with its parts, visit type and China day: what a
-- province reconciles against (3201/3202) and downloads (3260). Written with the entry.
CREATE TABLE clearing_detail (
    entry_id           BIGINT         PRIMARY KEY REFERENCES journal_entries (entry_id),
    kind               TEXT           NOT NULL,  -- CLAIM or REVERSAL
    insured_province   TEXT           NOT NULL,
    treatment_province TEXT           NOT NULL,
    treatment_region   TEXT           NOT NULL,
    claim_id           TEXT           NOT NULL,
    visit_type         TEXT           NOT NULL,
    day                DATE           NOT NULL,  -- China date it was settled or reversed
    period             TEXT           NOT NULL,
    total              NUMERIC(20, 2) NOT NULL,
    fund               NUMERIC(20, 2) NOT NULL,
    serious_illness    NUMERIC(20, 2) NOT NULL,
    assistance         NUMERIC(20, 2) NOT NULL,
    personal_account   NUMERIC(20, 2) NOT NULL,
    cash               NUMERIC(20, 2) NOT NULL
);
CREATE INDEX clearing_detail_by_day ON clearing_detail (insured_province, treatment_province, day);
CREATE INDEX clearing_detail_by_period ON clearing_detail (period, insured_province, treatment_province, entry_id);

-- Differences a reconciliation found, tracked until resolved or accepted.
CREATE TABLE discrepancies (
    id                 BIGSERIAL   PRIMARY KEY,
    province           TEXT        NOT NULL,
    counterparty       TEXT        NOT NULL,
    role               TEXT        NOT NULL,
    visit_type         TEXT        NOT NULL,
    scope              TEXT        NOT NULL,
    period             TEXT        NOT NULL,
    treatment_region   TEXT        NOT NULL,
    claim_id           TEXT        NOT NULL,
    kind               TEXT        NOT NULL,
    side               TEXT        NOT NULL,
    fields             TEXT        NOT NULL DEFAULT '',
    status             TEXT        NOT NULL DEFAULT 'OPEN',
    reason             TEXT        NOT NULL DEFAULT '',
    found_at           TIMESTAMPTZ NOT NULL DEFAULT now(),
    closed_at          TIMESTAMPTZ,
    -- The reconciliation run that last found it: one that does not find it resolves it.
    last_seen          UUID
);
CREATE UNIQUE INDEX one_open_discrepancy ON discrepancies
    (province, counterparty, role, visit_type, scope, treatment_region, claim_id, kind) WHERE status = 'OPEN';
CREATE INDEX discrepancies_by_period ON discrepancies (province, period) WHERE status = 'OPEN';
