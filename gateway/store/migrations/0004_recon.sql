-- Reconciliation (issue 16): runs per (channel, business day), the statement lines a run staged,
-- its items (every line or attempt that did not simply match, with both sides' fields), the
-- local_only candidates carried over to the next days' statements, and the scheduler's claims.
-- Times are UTC DATETIME(6); business days are DATE in the lender's timezone. docs/RECONCILIATION.md.

CREATE TABLE recon_runs (
  id             BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
  channel        VARCHAR(64)  NOT NULL,
  day            DATE         NOT NULL,
  seq            INT          NOT NULL,             -- 1 for the first run of (channel, day), then 2, ...
  trigger_kind   VARCHAR(16)  NOT NULL,             -- schedule / manual / import
  operator       VARCHAR(64)  NOT NULL DEFAULT '',
  status         VARCHAR(16)  NOT NULL,             -- RUNNING / SUCCEEDED / FAILED
  outcome        VARCHAR(16)  NOT NULL DEFAULT '',  -- consistent / inconsistent (SUCCEEDED runs)
  format         VARCHAR(32)  NOT NULL DEFAULT '',
  source         VARCHAR(255) NOT NULL DEFAULT '',
  sha256         CHAR(64)     NOT NULL DEFAULT '',
  line_count     BIGINT       NOT NULL DEFAULT 0,
  matched        BIGINT       NOT NULL DEFAULT 0,
  discrepancies  INT          NOT NULL DEFAULT 0,
  resolved       INT          NOT NULL DEFAULT 0,   -- flows settled by the statement
  carried        INT          NOT NULL DEFAULT 0,   -- local_only candidates carried to later days
  totals         JSON         NULL,                 -- both sides' counts, amounts and fees by kind
  error          VARCHAR(500) NOT NULL DEFAULT '',
  superseded_by  BIGINT UNSIGNED NULL,              -- a later run of the same (channel, day)
  started_at     DATETIME(6)  NOT NULL,
  finished_at    DATETIME(6)  NULL,
  UNIQUE KEY uq_recon_runs_seq (channel, day, seq),
  KEY ix_recon_runs_day (day, channel),
  KEY ix_recon_runs_finished (status, channel, finished_at)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

-- A run's statement, staged line by line before anything is matched (a file that fails to parse
-- leaves nothing here). Joined to attempts on channel_order_no: same charset and collation. The
-- clustered key leads with (run_id, channel_order_no), the lookups' key: no secondary index to keep.
CREATE TABLE recon_lines (
  run_id         BIGINT UNSIGNED NOT NULL,
  line_no        INT UNSIGNED NOT NULL,
  channel_order_no VARCHAR(64) NOT NULL,
  operation      VARCHAR(16)  NOT NULL,             -- withhold / payout / refund
  status         VARCHAR(16)  NOT NULL,             -- SUCCEEDED / FAILED
  amount         BIGINT       NOT NULL,
  fee            BIGINT       NOT NULL,
  currency       CHAR(3)      NOT NULL,
  booked_at      DATETIME(6)  NOT NULL,
  channel_txn_id VARCHAR(128) NOT NULL DEFAULT '',
  original_order_no VARCHAR(64) NOT NULL DEFAULT '',
  PRIMARY KEY (run_id, channel_order_no, line_no)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

-- Reconciliation's own discrepancies (not the callback-conflict table `discrepancies`): one row per
-- line or attempt of a run that did not match, with both sides' fields, and what finance did.
CREATE TABLE recon_items (
  id             BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
  run_id         BIGINT UNSIGNED NOT NULL,
  channel        VARCHAR(64)  NOT NULL,
  day            DATE         NOT NULL,
  class          VARCHAR(24)  NOT NULL,             -- channel_only / local_only / amount_mismatch / ...
  channel_order_no VARCHAR(64) NOT NULL,
  flow_id        BIGINT UNSIGNED NULL,
  flow_no        VARCHAR(26)  NOT NULL DEFAULT '',
  attempt_id     BIGINT UNSIGNED NULL,
  operation      VARCHAR(16)  NOT NULL DEFAULT '',
  local_status   VARCHAR(16)  NOT NULL DEFAULT '',  -- the attempt's status ('' when we have none)
  local_amount   BIGINT       NULL,
  local_fee      BIGINT       NULL,                 -- the fee we expected
  line_no        INT UNSIGNED NULL,                 -- the statement's side ('' / NULL when it has none)
  line_status    VARCHAR(16)  NOT NULL DEFAULT '',
  line_amount    BIGINT       NULL,
  line_fee       BIGINT       NULL,
  line_txn_id    VARCHAR(128) NOT NULL DEFAULT '',
  line_booked_at DATETIME(6)  NULL,
  resolution     VARCHAR(16)  NOT NULL DEFAULT 'OPEN',  -- OPEN / EXPLAINED / RESOLVED
  resolved_by    VARCHAR(64)  NOT NULL DEFAULT '',
  resolution_reason VARCHAR(500) NOT NULL DEFAULT '',
  resolved_at    DATETIME(6)  NULL,
  created_at     DATETIME(6)  NOT NULL,
  KEY ix_recon_items_run (run_id, class),
  KEY ix_recon_items_open (resolution, day),
  KEY ix_recon_items_order (channel_order_no)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

-- A success we recorded that the day's statement did not have: checked against the next days'
-- statements ([reconciliation] carry_over_days) before it is declared local_only.
CREATE TABLE recon_carry (
  id             BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
  channel        VARCHAR(64)  NOT NULL,
  attempt_id     BIGINT UNSIGNED NOT NULL,
  channel_order_no VARCHAR(64) NOT NULL,
  origin_day     DATE         NOT NULL,
  declare_day    DATE         NOT NULL,             -- the run of this day declares it when still missing
  origin_run_id  BIGINT UNSIGNED NOT NULL,
  status         VARCHAR(16)  NOT NULL,             -- OPEN / FOUND / DECLARED
  settled_run_id BIGINT UNSIGNED NULL,
  created_at     DATETIME(6)  NOT NULL,
  UNIQUE KEY uq_recon_carry_attempt (attempt_id),
  KEY ix_recon_carry_open (channel, status, declare_day),
  KEY ix_recon_carry_settled (settled_run_id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

-- The daily scheduler's claim: one scheduled run per (channel, day), whatever the replicas.
CREATE TABLE recon_claims (
  channel        VARCHAR(64)  NOT NULL,
  day            DATE         NOT NULL,
  owner          VARCHAR(64)  NOT NULL,
  run_id         BIGINT UNSIGNED NULL,
  claimed_at     DATETIME(6)  NOT NULL,
  PRIMARY KEY (channel, day)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;
