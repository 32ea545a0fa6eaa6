-- Family mutual aid (家庭共济): an employee's personal account opened to a spouse, parent or
-- child by the insured place, for a span of China dates.
CREATE TABLE family_links (
    id               BIGSERIAL   PRIMARY KEY,
    insured_region   TEXT        NOT NULL,
    holder_person_id TEXT        NOT NULL,
    member_person_id TEXT        NOT NULL,
    relation         TEXT        NOT NULL,
    linked_from      DATE        NOT NULL,
    unlinked_from    DATE,
    request_id       TEXT,
    created_at       TIMESTAMPTZ NOT NULL DEFAULT now(),
    UNIQUE (insured_region, request_id)
);
CREATE INDEX family_links_by_member ON family_links (insured_region, member_person_id, holder_person_id);
-- Whose account paid a claim's personal-account part, when not the patient's: a reversal
-- gives it back there.
ALTER TABLE claims ADD COLUMN personal_account_holder TEXT;
