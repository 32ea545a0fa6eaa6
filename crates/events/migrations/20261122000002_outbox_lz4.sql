-- Event payloads of a kilobyte or two are compressed with LZ4 rather than the default
-- pglz when PostgreSQL compresses a row: a fraction of the CPU, on the settlement hot path.
ALTER TABLE outbox ALTER COLUMN payload SET COMPRESSION lz4;
