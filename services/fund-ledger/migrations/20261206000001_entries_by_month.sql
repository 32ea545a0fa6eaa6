-- Ledger entries by China month of posting (`platform::partitions`), each stored once:
-- * the clearing detail (visit type, China day, total, cash) is part of its entry, and
--   `clearing_detail` is now a view of the claim entries, amounts unsigned;
-- * the legs are not stored: they follow from the entry by the double-entry rule
--   (`domain::ledger::claim_entry`, `top_up_entry`), a top-up's amount being its total;
--   account balances are kept as before, in the posting's transaction;
-- * an event is posted once within a month by each partition's index (across months by
--   the consumer's processed events), a claim reversed once by the posting's own check.
ALTER TABLE journal_entries RENAME TO journal_entries_unpartitioned;
ALTER TABLE journal_entries_unpartitioned RENAME CONSTRAINT journal_entries_pkey TO journal_entries_unpartitioned_pkey;
ALTER TABLE journal_entries_unpartitioned DROP CONSTRAINT journal_entries_event_id_key;
DROP INDEX journal_entries_by_pair, journal_entries_by_period, one_reversal_per_claim;
ALTER TABLE journal_entries_unpartitioned ALTER COLUMN entry_id DROP DEFAULT;
ALTER SEQUENCE journal_entries_entry_id_seq OWNED BY NONE;
DROP INDEX clearing_detail_by_day, clearing_detail_by_period;
ALTER TABLE clearing_detail RENAME TO clearing_detail_unpartitioned;
ALTER TABLE clearing_detail_unpartitioned RENAME CONSTRAINT clearing_detail_pkey TO clearing_detail_unpartitioned_pkey;

CREATE TABLE journal_entries (
    entry_id           BIGINT         NOT NULL DEFAULT nextval('journal_entries_entry_id_seq'),
    event_id           UUID           NOT NULL,
    kind               TEXT           NOT NULL,
    insured_province   TEXT           NOT NULL,
    treatment_province TEXT           NOT NULL,
    treatment_region   TEXT           NOT NULL,
    claim_id           TEXT           NOT NULL,
    original_event_id  UUID,
    fund               NUMERIC(20, 2) NOT NULL,
    serious_illness    NUMERIC(20, 2) NOT NULL,
    assistance         NUMERIC(20, 2) NOT NULL,
    personal_account   NUMERIC(20, 2) NOT NULL,
    period             TEXT           REFERENCES clearing_periods (period),
    visit_type         TEXT,                     -- claims: what reconciliation compares
    day                DATE,                     -- claims: China date settled or reversed
    total              NUMERIC(20, 2),           -- claims: the bill; top-ups: the amount
    cash               NUMERIC(20, 2),
    posted_at          TIMESTAMPTZ    NOT NULL DEFAULT now(),
    PRIMARY KEY (entry_id, posted_at)
) PARTITION BY RANGE (posted_at);
ALTER SEQUENCE journal_entries_entry_id_seq OWNED BY journal_entries.entry_id;
CREATE INDEX journal_entries_by_period ON journal_entries (period, insured_province, treatment_province, entry_id);
CREATE INDEX journal_entries_by_day ON journal_entries (insured_province, treatment_province, day);

SELECT create_month_partitions('journal_entries',
                               COALESCE((SELECT min(posted_at) FROM journal_entries_unpartitioned), now()) - interval '1 month',
                               now() + interval '2 months',
                               ARRAY['CREATE UNIQUE INDEX {p}_event_once ON {p} (event_id)',
                                     'CREATE UNIQUE INDEX {p}_one_reversal ON {p} (original_event_id) WHERE kind = ''CLAIM_REVERSED''']);
INSERT INTO journal_entries
SELECT e.entry_id, e.event_id, e.kind, e.insured_province, e.treatment_province, e.treatment_region, e.claim_id,
       e.original_event_id, e.fund, e.serious_illness, e.assistance, e.personal_account, e.period,
       d.visit_type, d.day,
       COALESCE(d.total, (SELECT l.amount FROM journal_legs l WHERE l.entry_id = e.entry_id AND l.account LIKE 'reserve:%')),
       d.cash, e.posted_at
FROM journal_entries_unpartitioned e LEFT JOIN clearing_detail_unpartitioned d USING (entry_id);
DROP TABLE clearing_detail_unpartitioned, journal_legs, journal_entries_unpartitioned;

CREATE TRIGGER journal_entries_immutable BEFORE UPDATE OR DELETE ON journal_entries
    FOR EACH ROW EXECUTE FUNCTION journal_is_immutable();

CREATE VIEW clearing_detail AS
SELECT entry_id, CASE kind WHEN 'CLAIM_REVERSED' THEN 'REVERSAL' ELSE 'CLAIM' END AS kind,
       insured_province, treatment_province, treatment_region, claim_id, visit_type, day, period, total,
       abs(fund) AS fund, abs(serious_illness) AS serious_illness, abs(assistance) AS assistance,
       abs(personal_account) AS personal_account, cash
FROM journal_entries
WHERE kind IN ('CLAIM_SETTLED', 'CLAIM_REVERSED');
