-- Withholding plans (issue 17): plans, instalments, their attempts, the time points' runs and the
-- shared per-channel rate-limit buckets. Times are UTC DATETIME(6); business days are DATE in the
-- lender's timezone. docs/PLANS.md.

CREATE TABLE plans (
  id             BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
  caller         VARCHAR(64)  NOT NULL,
  plan_id        VARCHAR(64)  NOT NULL,
  product        VARCHAR(64)  NOT NULL,
  policy         VARCHAR(64)  NOT NULL,
  status         VARCHAR(16)  NOT NULL,              -- ACTIVE / SETTLED / CANCELLED
  paused         TINYINT(1)   NOT NULL DEFAULT 0,
  account_sealed VARBINARY(128) NOT NULL,            -- AES-GCM sealed card number (gateway/plans/sealing.py)
  account_hash   CHAR(64)     NOT NULL,
  account_masked VARCHAR(40)  NOT NULL,
  bank_code      VARCHAR(16)  NOT NULL,
  agreement_no   VARCHAR(26)  NOT NULL DEFAULT '',
  description    VARCHAR(255) NOT NULL DEFAULT '',
  request_hash   CHAR(64)     NOT NULL,
  created_at     DATETIME(6)  NOT NULL,
  updated_at     DATETIME(6)  NOT NULL,
  UNIQUE KEY uq_plans_caller_plan (caller, plan_id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

CREATE TABLE instalments (
  id              BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
  plan_ref        BIGINT UNSIGNED NOT NULL,          -- plans.id
  caller          VARCHAR(64)  NOT NULL,
  plan_id         VARCHAR(64)  NOT NULL,
  instalment_id   VARCHAR(64)  NOT NULL,
  product         VARCHAR(64)  NOT NULL,
  policy          VARCHAR(64)  NOT NULL,
  due_date        DATE         NOT NULL,
  last_day        DATE         NOT NULL,             -- no attempt after this business day
  amount          BIGINT       NOT NULL,             -- still to collect, minor units
  original_amount BIGINT       NOT NULL,
  currency        CHAR(3)      NOT NULL,
  status          VARCHAR(16)  NOT NULL,             -- SCHEDULED / CLAIMED / IN_FLIGHT / SUCCEEDED / STOPPED / SETTLED / CANCELLED
  paused          TINYINT(1)   NOT NULL DEFAULT 0,
  plan_paused     TINYINT(1)   NOT NULL DEFAULT 0,
  closing         VARCHAR(8)   NOT NULL DEFAULT '',  -- SETTLE / CANCEL asked while IN_FLIGHT
  next_attempt_at DATETIME(6)  NULL,                 -- the time point it is next due at
  attempts        INT          NOT NULL DEFAULT 0,
  attempts_day    DATE         NULL,
  attempts_on_day INT          NOT NULL DEFAULT 0,
  last_code       VARCHAR(64)  NOT NULL DEFAULT '',
  stop_reason     VARCHAR(64)  NOT NULL DEFAULT '',
  run_id          BIGINT UNSIGNED NULL,
  claim_owner     VARCHAR(64)  NOT NULL DEFAULT '',
  claim_token     CHAR(16)     NOT NULL DEFAULT '',
  lease_until     DATETIME(6)  NULL,
  attempt_request_id VARCHAR(64) NOT NULL DEFAULT '',
  attempt_day     DATE         NULL,
  attempt_time_point CHAR(5)   NOT NULL DEFAULT '',
  flow_id         BIGINT UNSIGNED NULL,              -- the in-flight (or last) withhold's flow
  event_seq       INT          NOT NULL DEFAULT 0,
  version         INT UNSIGNED NOT NULL DEFAULT 0,   -- bumped by every write (a write always changes the row)
  request_hash    CHAR(64)     NOT NULL,
  created_at      DATETIME(6)  NOT NULL,
  updated_at      DATETIME(6)  NOT NULL,
  finished_at     DATETIME(6)  NULL,
  UNIQUE KEY uq_instalments_caller_id (caller, instalment_id),
  -- claims: the due rows of one policy, in due order (SKIP LOCKED walks this index only)
  KEY ix_instalments_due (policy, status, next_attempt_at),
  KEY ix_instalments_plan (plan_ref),
  KEY ix_instalments_caller_due (caller, due_date, id),
  KEY ix_instalments_status_lease (status, lease_until),
  KEY ix_instalments_owner (claim_owner)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

-- One row per withhold of an instalment at a time point: the database itself refuses a second
-- attempt of an instalment at the same time point of the same day (DESIGN.md invariant 12).
CREATE TABLE instalment_attempts (
  id             BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
  instalment_ref BIGINT UNSIGNED NOT NULL,
  run_id         BIGINT UNSIGNED NULL,
  business_day   DATE         NOT NULL,
  time_point     CHAR(5)      NOT NULL,
  request_id     VARCHAR(64)  NOT NULL,
  amount         BIGINT       NOT NULL,
  currency       CHAR(3)      NOT NULL,
  status         VARCHAR(16)  NOT NULL,              -- IN_FLIGHT / SUCCEEDED / FAILED
  code           VARCHAR(64)  NOT NULL DEFAULT '',
  flow_id        BIGINT UNSIGNED NULL,
  channel        VARCHAR(64)  NOT NULL DEFAULT '',
  created_at     DATETIME(6)  NOT NULL,
  finished_at    DATETIME(6)  NULL,
  UNIQUE KEY uq_attempts_instalment_point (instalment_ref, business_day, time_point),
  KEY ix_attempts_run (run_id, status),
  KEY ix_attempts_day (business_day, status)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

CREATE TABLE plan_runs (
  id             BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
  policy         VARCHAR(64)  NOT NULL,
  business_day   DATE         NOT NULL,
  time_point     CHAR(5)      NOT NULL,
  scheduled_at   DATETIME(6)  NOT NULL,
  deadline       DATETIME(6)  NOT NULL,
  status         VARCHAR(16)  NOT NULL,              -- RUNNING / PAUSED / FINISHED / BEHIND
  started_by     VARCHAR(64)  NOT NULL,
  due_by_product JSON         NULL,
  started_at     DATETIME(6)  NOT NULL,
  finished_at    DATETIME(6)  NULL,
  lag_s          DOUBLE       NOT NULL DEFAULT 0,
  missed         INT          NOT NULL DEFAULT 0,
  updated_at     DATETIME(6)  NOT NULL,
  UNIQUE KEY uq_plan_runs_point (policy, business_day, time_point),
  KEY ix_plan_runs_status (status, deadline),
  KEY ix_plan_runs_day (business_day)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

-- Per-channel token buckets shared by every replica (gateway/plans/ratelimit.py).
CREATE TABLE plan_rate_buckets (
  channel      VARCHAR(64)  NOT NULL PRIMARY KEY,
  tokens       DOUBLE       NOT NULL,
  refilled_at  DATETIME(6)  NOT NULL
) ENGINE=InnoDB;
