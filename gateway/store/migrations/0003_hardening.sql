-- Issue 13 (hardening of the money paths).

-- Per-card daily limits, counted atomically in the commit that records an attempt:
-- one row per card, channel and business day (the lender's timezone, [business] timezone).
-- The attempt's transaction adds itself only while the row is under the channel's limits
-- (UPDATE ... WHERE attempts < ? AND amount + ? <= ?), so concurrent withholds on one card
-- cannot pass together. Rows of past days are only read for reports; a retention job may
-- delete them.
CREATE TABLE card_usage (
  account_hash CHAR(64)     NOT NULL,
  channel      VARCHAR(64)  NOT NULL,
  day          DATE         NOT NULL,
  attempts     INT          NOT NULL DEFAULT 0,
  amount       BIGINT       NOT NULL DEFAULT 0,
  updated_at   DATETIME(6)  NOT NULL,
  PRIMARY KEY (account_hash, channel, day)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

-- Every change of a position's balance (settlement, adjustment, sync) counts here; a sync writes
-- only if it is still the value it read before querying the channel's balance.
ALTER TABLE positions
  ADD COLUMN balance_version BIGINT UNSIGNED NOT NULL DEFAULT 0;

-- Agreements: a confirm is recorded as sent before the channel is called (record before call),
-- so an agreement left awaiting after a confirm was sent (a crash, a cancellation) is found by
-- recovery and marked for an operator.
ALTER TABLE agreements
  ADD COLUMN confirm_sent_at DATETIME(6) NULL,
  ADD COLUMN needs_review TINYINT(1) NOT NULL DEFAULT 0,
  ADD KEY ix_agreements_confirming (status, confirm_sent_at);

-- The relay keeps each flow's events in order: it looks up a flow's earlier unpublished rows.
ALTER TABLE outbox
  ADD KEY ix_outbox_flow (flow_id, id);
