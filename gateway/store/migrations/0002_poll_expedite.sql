-- Expedited queries (a callback that failed verification, an operator's re-query)
-- must not use up the poll schedule, and a flood of them must not become a flood
-- of queries to the channel: remember that a row was expedited, and when.
ALTER TABLE poll_queue
  ADD COLUMN expedited TINYINT(1) NOT NULL DEFAULT 0,
  ADD COLUMN expedited_at DATETIME(6) NULL;
