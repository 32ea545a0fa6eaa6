-- Claims by China month of settlement (`platform::partitions`), stored compactly:
-- * `result` is the SettlementResult compressed with zstd (it repeats the claim's lines
--   as both request and answer; half its bytes go), marked by a leading format byte;
-- * whether a claim was reversed is its reversal's event id being set (no status text);
-- * a claim id is unique within its month by each partition's index, and across months by
--   the settlement write itself (a per-id advisory lock, then a look across partitions).
ALTER TABLE claims RENAME TO claims_unpartitioned;
ALTER TABLE claims_unpartitioned RENAME CONSTRAINT claims_pkey TO claims_unpartitioned_pkey;
ALTER INDEX claims_by_person RENAME TO claims_unpartitioned_by_person;

CREATE TABLE claims (
    treatment_region        TEXT           NOT NULL,
    claim_id                TEXT           NOT NULL,
    insured_region          TEXT           NOT NULL,
    person_id               TEXT           NOT NULL,
    year                    INT            NOT NULL,
    request                 BYTEA          NOT NULL,  -- SHA-256 of the Claim as received
    result                  BYTEA          NOT NULL,  -- the SettlementResult returned, compressed
    settled_event_id        UUID           NOT NULL,
    reversed_event_id       UUID,
    inpatient_admissions    INT            NOT NULL,
    inpatient_fund_paid     NUMERIC(20, 2) NOT NULL,
    disease_code            TEXT,
    disease_deductible_met  NUMERIC(20, 2) NOT NULL,
    disease_fund_paid       NUMERIC(20, 2) NOT NULL,
    serious_illness_base    NUMERIC(20, 2) NOT NULL,
    serious_illness_paid    NUMERIC(20, 2) NOT NULL,
    assistance_paid         NUMERIC(20, 2) NOT NULL,
    personal_account_debit  NUMERIC(20, 2) NOT NULL,
    personal_account_holder TEXT,
    settled_at              TIMESTAMPTZ    NOT NULL,
    reversed_at             TIMESTAMPTZ
) PARTITION BY RANGE (settled_at);
ALTER TABLE claims ALTER COLUMN result SET STORAGE EXTERNAL;  -- compressed already
CREATE INDEX claims_by_person ON claims (insured_region, person_id, year, settled_at);

SELECT create_month_partitions('claims', COALESCE((SELECT min(settled_at) FROM claims_unpartitioned), now()) - interval '1 month',
                               now() + interval '2 months',
                               ARRAY['CREATE UNIQUE INDEX {p}_claim_once ON {p} (treatment_region, claim_id)']);
INSERT INTO claims
SELECT treatment_region, claim_id, insured_region, person_id, year, request, '\x00'::bytea || result, settled_event_id,
       CASE WHEN status = 'REVERSED' THEN COALESCE(reversed_event_id, settled_event_id) END,
       inpatient_admissions, inpatient_fund_paid, disease_code, disease_deductible_met, disease_fund_paid,
       serious_illness_base, serious_illness_paid, assistance_paid, personal_account_debit, personal_account_holder,
       settled_at, reversed_at
FROM claims_unpartitioned;
DROP TABLE claims_unpartitioned;
