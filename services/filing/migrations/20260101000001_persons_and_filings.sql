CREATE TABLE persons (
    insured_region      TEXT        NOT NULL,
    person_id           TEXT        NOT NULL,
    id_number           TEXT        NOT NULL,
    name                TEXT        NOT NULL,
    scheme              TEXT        NOT NULL,
    retired             BOOLEAN     NOT NULL,
    assistance_category TEXT        NOT NULL DEFAULT '',
    created_at          TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at          TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (insured_region, person_id)
);

CREATE TABLE filings (
    filing_id        UUID        PRIMARY KEY,
    request_id       TEXT,
    insured_region   TEXT        NOT NULL,
    person_id        TEXT        NOT NULL,
    treatment_region TEXT        NOT NULL,
    category         TEXT        NOT NULL,
    long_term        BOOLEAN     NOT NULL,
    start_date       DATE        NOT NULL,
    end_date         DATE,
    status           TEXT        NOT NULL DEFAULT 'ACTIVE',
    revoked_from     DATE,
    residence_proof  BOOLEAN     NOT NULL DEFAULT false,
    proof_reference  TEXT        NOT NULL DEFAULT '',
    created_at       TIMESTAMPTZ NOT NULL DEFAULT now(),
    FOREIGN KEY (insured_region, person_id) REFERENCES persons (insured_region, person_id),
    UNIQUE (insured_region, request_id)
);
CREATE INDEX filings_by_person ON filings (insured_region, person_id);
-- At most one active long-term filing per person.
CREATE UNIQUE INDEX one_active_long_term ON filings (insured_region, person_id)
    WHERE long_term AND status = 'ACTIVE';
