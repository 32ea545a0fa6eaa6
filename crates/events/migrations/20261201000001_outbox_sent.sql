-- Sent events are kept for a while (`kafka.outbox_retention_days`), so that an operator can
-- have them published again after a broker lost data (`clearinghouse republish`). The hot
-- outbox keeps only what is still to send; the relay moves a row here in the transaction
-- that records its acknowledgement.
CREATE TABLE outbox_sent (
    id          BIGSERIAL PRIMARY KEY,
    event_id    UUID        NOT NULL,
    topic       TEXT        NOT NULL,
    key         TEXT        NOT NULL,
    event_type  TEXT        NOT NULL,
    payload     BYTEA       NOT NULL,
    traceparent TEXT,
    created_at  TIMESTAMPTZ NOT NULL,
    sent_at     TIMESTAMPTZ NOT NULL DEFAULT now()
);
ALTER TABLE outbox_sent ALTER COLUMN payload SET COMPRESSION lz4;
CREATE INDEX outbox_sent_by_time ON outbox_sent (sent_at);
