-- An event kept by its producer (a settled claim's, in the claim's row) is not kept in
-- `outbox_sent` at all once sent: the producer finds and rebuilds those that occurred since
-- a time (`relay::Rebuild`), so the rows kept by reference before are redundant.
DELETE FROM outbox_sent WHERE payload IS NULL;
