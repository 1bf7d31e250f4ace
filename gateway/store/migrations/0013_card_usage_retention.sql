-- Retention of per-card daily usage (gateway/retention.py): the rows of past business days are
-- deleted in small batches by day, so the table holds a bounded number of days, not every day
-- since the start. The primary key leads with the card; this index lets the job find old days
-- without reading the whole table.
ALTER TABLE card_usage
  ADD KEY ix_card_usage_day (day);
