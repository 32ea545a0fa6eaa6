-- An event kept by its producer (a settled claim's, in the claim's row) is not kept in
-- `outbox_sent` at all once sent: the producer finds and rebuilds those that occurred since
-- a time (`relay::Rebuild`). The rows kept by reference before are redundant, and every
-- row kept is whole again.
DELETE FROM outbox_sent WHERE payload IS NULL;
ALTER TABLE outbox_sent DROP CONSTRAINT sent_payload_or_source;
ALTER TABLE outbox_sent DROP COLUMN source;
ALTER TABLE outbox_sent ALTER COLUMN payload SET NOT NULL;
