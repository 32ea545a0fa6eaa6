-- PutCatalogue is idempotent by request id: the same items again return the version they
-- made; other items under the same id are refused. The digest covers the effective date and
-- every item, whatever the stream's chunking.
ALTER TABLE catalogue_versions ADD COLUMN request_id TEXT;
ALTER TABLE catalogue_versions ADD COLUMN request_digest BYTEA;
ALTER TABLE catalogue_versions ADD CONSTRAINT catalogue_request_once UNIQUE (treatment_region, request_id);
