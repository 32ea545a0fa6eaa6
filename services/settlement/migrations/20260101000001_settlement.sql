-- Reference data. A version is never changed in place: a change is a new version.
CREATE TABLE policies (
    version          BIGSERIAL   PRIMARY KEY,
    insured_region   TEXT        NOT NULL,
    scheme           TEXT        NOT NULL,
    visit_type       TEXT        NOT NULL,
    effective_from   DATE        NOT NULL,
    body             BYTEA       NOT NULL,  -- the clearinghouse.settlement.v1.Policy as put
    request_id       TEXT,
    created_at       TIMESTAMPTZ NOT NULL DEFAULT now(),
    UNIQUE (insured_region, request_id)
);
CREATE INDEX policies_in_force ON policies (insured_region, scheme, visit_type, effective_from DESC, version DESC);

CREATE TABLE catalogue_versions (
    version          BIGSERIAL   PRIMARY KEY,
    treatment_region TEXT        NOT NULL,
    effective_from   DATE        NOT NULL,
    item_count       BIGINT      NOT NULL DEFAULT 0,
    created_at       TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX catalogues_in_force ON catalogue_versions (treatment_region, effective_from DESC, version DESC);

CREATE TABLE catalogue_items (
    version          BIGINT        NOT NULL REFERENCES catalogue_versions (version),
    item_code        TEXT          NOT NULL,
    name             TEXT          NOT NULL,
    class            CHAR(1)       NOT NULL,
    self_pay_ratio   NUMERIC(5, 4) NOT NULL,
    price_ceiling    NUMERIC(20, 4),
    PRIMARY KEY (version, item_code)
);

-- Read models built from the filing service's events.
CREATE TABLE person_projection (
    insured_region      TEXT    NOT NULL,
    person_id           TEXT    NOT NULL,
    scheme              TEXT    NOT NULL,
    retired             BOOLEAN NOT NULL,
    assistance_category TEXT    NOT NULL DEFAULT '',
    PRIMARY KEY (insured_region, person_id)
);

CREATE TABLE filing_projection (
    filing_id        UUID PRIMARY KEY,
    insured_region   TEXT NOT NULL,
    person_id        TEXT NOT NULL,
    treatment_region TEXT NOT NULL,
    category         TEXT NOT NULL,
    start_date       DATE NOT NULL,
    end_date         DATE,
    revoked_from     DATE
);
CREATE INDEX filing_projection_by_person ON filing_projection (insured_region, person_id);

-- Per person, insured region and year. The personal-account row doubles as the person's
-- lock: every claim of a person takes it first, so claims of one person are serialized.
CREATE TABLE personal_accounts (
    insured_region TEXT           NOT NULL,
    person_id      TEXT           NOT NULL,
    balance        NUMERIC(20, 2) NOT NULL DEFAULT 0 CHECK (balance >= 0),
    PRIMARY KEY (insured_region, person_id)
);

CREATE TABLE personal_account_credits (
    insured_region TEXT           NOT NULL,
    request_id     TEXT           NOT NULL,
    person_id      TEXT           NOT NULL,
    amount         NUMERIC(20, 2) NOT NULL,
    balance_after  NUMERIC(20, 2) NOT NULL,
    created_at     TIMESTAMPTZ    NOT NULL DEFAULT now(),
    PRIMARY KEY (insured_region, request_id)
);

CREATE TABLE accumulators (
    insured_region       TEXT           NOT NULL,
    person_id            TEXT           NOT NULL,
    year                 INT            NOT NULL,
    inpatient_admissions INT            NOT NULL DEFAULT 0,
    inpatient_fund_paid  NUMERIC(20, 2) NOT NULL DEFAULT 0,
    serious_illness_base NUMERIC(20, 2) NOT NULL DEFAULT 0,
    serious_illness_paid NUMERIC(20, 2) NOT NULL DEFAULT 0,
    assistance_paid      NUMERIC(20, 2) NOT NULL DEFAULT 0,
    PRIMARY KEY (insured_region, person_id, year)
);

CREATE TABLE disease_accumulators (
    insured_region TEXT           NOT NULL,
    person_id      TEXT           NOT NULL,
    year           INT            NOT NULL,
    disease_code   TEXT           NOT NULL,
    deductible_met NUMERIC(20, 2) NOT NULL DEFAULT 0,
    fund_paid      NUMERIC(20, 2) NOT NULL DEFAULT 0,
    PRIMARY KEY (insured_region, person_id, year, disease_code)
);

CREATE TABLE claims (
    treatment_region       TEXT           NOT NULL,
    claim_id               TEXT           NOT NULL,
    insured_region         TEXT           NOT NULL,
    person_id              TEXT           NOT NULL,
    year                   INT            NOT NULL,
    request                BYTEA          NOT NULL,  -- the Claim as received: idempotency
    result                 BYTEA          NOT NULL,  -- the SettlementResult returned
    status                 TEXT           NOT NULL,
    settled_event_id       UUID           NOT NULL,
    reversed_event_id      UUID,
    -- What the claim took, given back exactly by a reversal.
    inpatient_admissions   INT            NOT NULL,
    inpatient_fund_paid    NUMERIC(20, 2) NOT NULL,
    disease_code           TEXT,
    disease_deductible_met NUMERIC(20, 2) NOT NULL,
    disease_fund_paid      NUMERIC(20, 2) NOT NULL,
    serious_illness_base   NUMERIC(20, 2) NOT NULL,
    serious_illness_paid   NUMERIC(20, 2) NOT NULL,
    assistance_paid        NUMERIC(20, 2) NOT NULL,
    personal_account_debit NUMERIC(20, 2) NOT NULL,
    settled_at             TIMESTAMPTZ    NOT NULL DEFAULT now(),
    reversed_at            TIMESTAMPTZ,
    PRIMARY KEY (treatment_region, claim_id)
);
CREATE INDEX claims_by_person ON claims (insured_region, person_id, year, settled_at, claim_id);
