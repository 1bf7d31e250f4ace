-- The operations console's searches (issue 21). Sessions are signed cookies: no table.
-- Each index keeps (..., created_at, id) order (InnoDB appends the primary key), so a
-- filtered search pages newest first by a range of one index, never a sort or an OFFSET
-- (gateway/store/console_queries.py says which search uses which; docs/CONSOLE.md has
-- the figures with 1,000,000 flows).
ALTER TABLE flows
  ADD KEY ix_flows_created (created_at),
  -- the overview's counts and amounts of a day (and the 7-day trend) from the index alone
  ADD KEY ix_flows_created_totals (created_at, kind, status, currency, amount),
  ADD KEY ix_flows_request (request_id),
  ADD KEY ix_flows_caller_created (caller, created_at),
  ADD KEY ix_flows_channel_created (channel, created_at),
  ADD KEY ix_flows_original (original_flow_id),
  -- a narrow amount range (one borrower's 1,234.56 yuan) is found by amount, then sorted
  ADD KEY ix_flows_amount (amount);

-- success rates over the last hour and day: a range of attempts by creation time, from the index alone
ALTER TABLE attempts
  ADD KEY ix_attempts_created (created_at, channel, operation, status, payer_attributable);

-- discrepancies of the last minutes on the overview
ALTER TABLE discrepancies
  ADD KEY ix_discrepancies_created (created_at);
