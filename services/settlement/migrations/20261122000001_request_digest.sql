-- Claims now keep the SHA-256 of the payload as received instead of the payload itself:
-- enough to tell a repeat from a different claim under the same id, 32 bytes instead of
-- kilobytes per claim. Older rows keep their payload; the service hashes it on comparison.
COMMENT ON COLUMN claims.request IS 'SHA-256 of the Claim as received (older rows: the Claim itself)';
