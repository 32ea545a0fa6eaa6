-- Each period's claim postings per province pair, kept up to date by the posting
-- transaction itself, so statements, closing and the net gauges read one row per pair
-- instead of aggregating the period's journal (every 2 s, for the gauges).
CREATE TABLE period_pair_totals (
    period             TEXT           NOT NULL REFERENCES clearing_periods (period),
    insured_province   TEXT           NOT NULL,
    treatment_province TEXT           NOT NULL,
    settled            BIGINT         NOT NULL DEFAULT 0,
    reversed           BIGINT         NOT NULL DEFAULT 0,
    fund               NUMERIC(20, 2) NOT NULL DEFAULT 0,
    serious_illness    NUMERIC(20, 2) NOT NULL DEFAULT 0,
    assistance         NUMERIC(20, 2) NOT NULL DEFAULT 0,
    personal_account   NUMERIC(20, 2) NOT NULL DEFAULT 0,
    PRIMARY KEY (period, insured_province, treatment_province)
);

INSERT INTO period_pair_totals
SELECT period, insured_province, treatment_province,
       count(*) FILTER (WHERE kind = 'CLAIM_SETTLED'), count(*) FILTER (WHERE kind = 'CLAIM_REVERSED'),
       sum(fund), sum(serious_illness), sum(assistance), sum(personal_account)
FROM journal_entries
WHERE period IS NOT NULL AND kind IN ('CLAIM_SETTLED', 'CLAIM_REVERSED')
GROUP BY period, insured_province, treatment_province;
