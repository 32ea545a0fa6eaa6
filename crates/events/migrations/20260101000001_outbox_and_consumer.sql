-- The transactional outbox: rows are written in the same transaction as the state change
-- they announce, and relayed to Kafka by the outbox relay.
CREATE TABLE outbox (
    id          BIGSERIAL PRIMARY KEY,
    event_id    UUID        NOT NULL UNIQUE,
    topic       TEXT        NOT NULL,
    key         TEXT        NOT NULL,
    event_type  TEXT        NOT NULL,
    payload     BYTEA       NOT NULL,
    traceparent TEXT,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    sent_at     TIMESTAMPTZ
);
CREATE INDEX outbox_unsent ON outbox (id) WHERE sent_at IS NULL;

-- Positions of this service's consumers, written in the same transaction as their effect;
-- the broker's committed offsets are never trusted for correctness.
CREATE TABLE consumer_offsets (
    consumer_group TEXT   NOT NULL,
    topic          TEXT   NOT NULL,
    partition      INT    NOT NULL,
    next_offset    BIGINT NOT NULL,
    PRIMARY KEY (consumer_group, topic, partition)
);

-- Event ids already applied: a redelivered event (same or other offset) changes nothing.
CREATE TABLE processed_events (
    consumer_group TEXT        NOT NULL,
    event_id       UUID        NOT NULL,
    processed_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer_group, event_id)
);

-- Messages that could not be decoded: kept for an operator, never silently dropped.
CREATE TABLE rejected_events (
    consumer_group TEXT        NOT NULL,
    topic          TEXT        NOT NULL,
    partition      INT         NOT NULL,
    "offset"       BIGINT      NOT NULL,
    reason         TEXT        NOT NULL,
    payload        BYTEA,
    rejected_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer_group, topic, partition, "offset")
);
