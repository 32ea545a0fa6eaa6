-- An event whose producer keeps what it says (a settled claim's result, in the claim's
-- row) is kept as sent by reference: `source` names where, and `outbox_sent` keeps no
-- payload for it; republishing rebuilds it from there (`relay::Rebuild`) with its id and
-- time, so nothing is stored twice.
ALTER TABLE outbox ADD COLUMN source TEXT;
ALTER TABLE outbox_sent ADD COLUMN source TEXT;
ALTER TABLE outbox_sent ALTER COLUMN payload DROP NOT NULL;
ALTER TABLE outbox_sent ADD CONSTRAINT sent_payload_or_source CHECK (payload IS NOT NULL OR source IS NOT NULL);
