-- A reserve request's id is its insured province's own, as every other request id is its
-- province's: two provinces may each use an id for their own requests, and neither learns
-- of the other's.
ALTER TABLE reserve_requests DROP CONSTRAINT reserve_requests_pkey;
ALTER TABLE reserve_requests ADD PRIMARY KEY (insured_province, request_id);
