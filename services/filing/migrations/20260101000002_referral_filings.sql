-- A referral yields exactly one REFERRAL filing, however often its event is delivered.
ALTER TABLE filings ADD COLUMN referral_id UUID UNIQUE;
-- Changes and revocations inside the lock period made by the insured place's override.
ALTER TABLE filings ADD COLUMN lock_overridden_at TIMESTAMPTZ;
