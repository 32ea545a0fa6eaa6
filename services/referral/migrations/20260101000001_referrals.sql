CREATE TABLE referrals (
    referral_id        UUID        PRIMARY KEY,
    request_id         TEXT,
    insured_region     TEXT        NOT NULL,
    person_id          TEXT        NOT NULL,
    referring_hospital TEXT        NOT NULL,
    target_region      TEXT        NOT NULL,
    diagnosis          TEXT        NOT NULL,
    issue_date         DATE        NOT NULL,
    valid_until        DATE        NOT NULL,
    status             TEXT        NOT NULL DEFAULT 'ACTIVE',
    created_at         TIMESTAMPTZ NOT NULL DEFAULT now(),
    cancelled_at       TIMESTAMPTZ,
    UNIQUE (insured_region, request_id)
);
CREATE INDEX referrals_by_person ON referrals (insured_region, person_id, referral_id);
