-- Clearing periods: OPEN → CLOSED → CONFIRMED → SETTLED. Postings fall into the open one.
CREATE TABLE clearing_periods (
    period       TEXT        PRIMARY KEY,   -- 'YYYY-MM'
    state        TEXT        NOT NULL,
    opened_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    closed_at    TIMESTAMPTZ,
    settled_at   TIMESTAMPTZ
);
CREATE UNIQUE INDEX one_open_period ON clearing_periods ((true)) WHERE state = 'OPEN';

ALTER TABLE journal_entries ADD COLUMN period TEXT REFERENCES clearing_periods (period);
CREATE INDEX journal_entries_by_period ON journal_entries (period, insured_province, treatment_province);
-- A claim is reversed once, however often a reversal arrives.
CREATE UNIQUE INDEX one_reversal_per_claim ON journal_entries (original_event_id) WHERE kind = 'CLAIM_REVERSED';

-- Prepaid reserves (预付金) per (insured province, treatment province).
CREATE TABLE reserves (
    insured_province   TEXT           NOT NULL,
    treatment_province TEXT           NOT NULL,
    sized              NUMERIC(20, 2) NOT NULL DEFAULT 0,
    drawn              NUMERIC(20, 2) NOT NULL DEFAULT 0,
    level              TEXT           NOT NULL DEFAULT 'NONE',
    PRIMARY KEY (insured_province, treatment_province)
);

-- Idempotency of sizing and top-ups.
CREATE TABLE reserve_requests (
    request_id         TEXT           PRIMARY KEY,
    kind               TEXT           NOT NULL,
    insured_province   TEXT           NOT NULL,
    treatment_province TEXT           NOT NULL,
    amount             NUMERIC(20, 2) NOT NULL,
    created_at         TIMESTAMPTZ    NOT NULL DEFAULT now()
);

-- Each province's answer to a closed period's statement.
CREATE TABLE statement_responses (
    period     TEXT        NOT NULL REFERENCES clearing_periods (period),
    province   TEXT        NOT NULL,
    state      TEXT        NOT NULL,   -- CONFIRMED or DISPUTED
    reason     TEXT        NOT NULL DEFAULT '',
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (period, province)
);

CREATE TABLE settlement_instructions (
    period TEXT           NOT NULL REFERENCES clearing_periods (period),
    payer  TEXT           NOT NULL,
    payee  TEXT           NOT NULL,
    amount NUMERIC(20, 2) NOT NULL,
    PRIMARY KEY (period, payer, payee)
);
