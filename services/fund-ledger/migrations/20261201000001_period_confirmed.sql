-- The period's passage to CONFIRMED (every province confirmed its statement).
ALTER TABLE clearing_periods ADD COLUMN confirmed_at TIMESTAMPTZ;
