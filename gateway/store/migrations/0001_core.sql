-- paygate core schema. Applied by `paygate migrate`; each file runs once,
-- recorded in schema_migrations. Times are UTC DATETIME(6).

CREATE TABLE flows (
  id            BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
  flow_no       CHAR(26)     NOT NULL,
  caller        VARCHAR(64)  NOT NULL,
  request_id    VARCHAR(64)  NOT NULL,
  kind          VARCHAR(16)  NOT NULL,              -- WITHHOLD / PAYOUT / REFUND
  amount        BIGINT       NOT NULL,              -- minor units
  currency      CHAR(3)      NOT NULL,
  account_hash  CHAR(64)     NOT NULL DEFAULT '',   -- keyed hash of the account number
  account_masked VARCHAR(40) NOT NULL DEFAULT '',
  bank_code     VARCHAR(16)  NOT NULL DEFAULT '',
  request_hash  CHAR(64)     NOT NULL,              -- canonical request hash (idempotency)
  status        VARCHAR(16)  NOT NULL,              -- PROCESSING / SUCCEEDED / FAILED
  channel       VARCHAR(64)  NOT NULL DEFAULT '',
  channel_txn_id VARCHAR(128) NOT NULL DEFAULT '',
  failure_code  VARCHAR(64)  NOT NULL DEFAULT '',
  failure_message VARCHAR(255) NOT NULL DEFAULT '',
  payer_attributable TINYINT(1) NOT NULL DEFAULT 0,
  needs_review  TINYINT(1)   NOT NULL DEFAULT 0,
  original_flow_id BIGINT UNSIGNED NULL,            -- refunds
  refunded_amount BIGINT     NOT NULL DEFAULT 0,    -- withholds: succeeded refunds
  refund_reserved BIGINT     NOT NULL DEFAULT 0,    -- withholds: refunds in flight or succeeded
  description   VARCHAR(255) NOT NULL DEFAULT '',
  version       INT UNSIGNED NOT NULL DEFAULT 0,
  created_at    DATETIME(6)  NOT NULL,
  updated_at    DATETIME(6)  NOT NULL,
  finished_at   DATETIME(6)  NULL,
  UNIQUE KEY uq_flows_flow_no (flow_no),
  UNIQUE KEY uq_flows_caller_request (caller, request_id),
  KEY ix_flows_review (needs_review, status, id),
  KEY ix_flows_status_created (status, created_at)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

CREATE TABLE attempts (
  id              BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
  flow_id         BIGINT UNSIGNED NOT NULL,
  seq             INT          NOT NULL,
  channel         VARCHAR(64)  NOT NULL,
  operation       VARCHAR(16)  NOT NULL,            -- withhold / payout / refund
  channel_order_no VARCHAR(40) NOT NULL,
  status          VARCHAR(16)  NOT NULL,            -- SENDING / PENDING / SUCCEEDED / FAILED
  amount          BIGINT       NOT NULL,
  currency        CHAR(3)      NOT NULL,
  account_hash    CHAR(64)     NOT NULL DEFAULT '',
  bank_code       VARCHAR(16)  NOT NULL DEFAULT '',
  raw_code        VARCHAR(64)  NOT NULL DEFAULT '',
  raw_message     VARCHAR(255) NOT NULL DEFAULT '',
  code            VARCHAR(64)  NOT NULL DEFAULT '',
  payer_attributable TINYINT(1) NOT NULL DEFAULT 0,
  safe_elsewhere  TINYINT(1)   NOT NULL DEFAULT 0,
  channel_txn_id  VARCHAR(128) NOT NULL DEFAULT '',
  fee             BIGINT       NULL,
  decision        JSON         NULL,                -- routing explanation
  position_reserved BIGINT     NOT NULL DEFAULT 0,  -- payouts: float reserved for this attempt
  version         INT UNSIGNED NOT NULL DEFAULT 0,
  created_at      DATETIME(6)  NOT NULL,
  updated_at      DATETIME(6)  NOT NULL,
  finished_at     DATETIME(6)  NULL,
  UNIQUE KEY uq_attempts_order_no (channel_order_no),
  UNIQUE KEY uq_attempts_flow_seq (flow_id, seq),
  KEY ix_attempts_status (status, id),
  KEY ix_attempts_channel_finished (channel, finished_at),
  KEY ix_attempts_card (account_hash, channel, created_at)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

-- Delayed polling. A claim pushes due_at forward by the lease, so a crashed
-- poller's rows come back by themselves; every claim walks ix_poll_due only.
CREATE TABLE poll_queue (
  attempt_id   BIGINT UNSIGNED NOT NULL PRIMARY KEY,
  channel      VARCHAR(64)  NOT NULL,
  due_at       DATETIME(6)  NOT NULL,
  tries        INT          NOT NULL DEFAULT 0,
  lease_owner  VARCHAR(64)  NOT NULL DEFAULT '',
  lease_until  DATETIME(6)  NULL,
  created_at   DATETIME(6)  NOT NULL,
  KEY ix_poll_due (due_at)
) ENGINE=InnoDB;

CREATE TABLE outbox (
  id            BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
  event_id      CHAR(26)     NOT NULL,
  event_type    VARCHAR(32)  NOT NULL,              -- FLOW_RESULT / FLOW_NEEDS_REVIEW / DISCREPANCY
  flow_id       BIGINT UNSIGNED NOT NULL,
  caller        VARCHAR(64)  NOT NULL,
  msg_key       VARCHAR(64)  NOT NULL,              -- flow_no
  payload       MEDIUMBLOB   NOT NULL,              -- serialized paygate.v1.FlowEvent (protobuf)
  created_at    DATETIME(6)  NOT NULL,
  published_at  DATETIME(6)  NULL,
  attempts      INT          NOT NULL DEFAULT 0,
  last_error    VARCHAR(255) NOT NULL DEFAULT '',
  -- 'result:<flow_id>' for FLOW_RESULT rows, NULL otherwise: the database
  -- itself refuses a second terminal result event for a flow (invariant 6).
  dedupe_key    VARCHAR(64)  NULL,
  UNIQUE KEY uq_outbox_event (event_id),
  UNIQUE KEY uq_outbox_dedupe (dedupe_key),
  KEY ix_outbox_unpublished (published_at, id)
) ENGINE=InnoDB;

CREATE TABLE agreements (
  id             BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
  agreement_no   CHAR(26)     NOT NULL,
  caller         VARCHAR(64)  NOT NULL,
  request_id     VARCHAR(64)  NOT NULL,
  request_hash   CHAR(64)     NOT NULL,
  channel        VARCHAR(64)  NOT NULL,
  account_hash   CHAR(64)     NOT NULL,
  account_masked VARCHAR(40)  NOT NULL,
  holder_masked  VARCHAR(64)  NOT NULL DEFAULT '',
  bank_code      VARCHAR(16)  NOT NULL,
  status         VARCHAR(24)  NOT NULL,             -- AWAITING_CONFIRMATION / ACTIVE / REVOKED / SIGN_FAILED
  sign_ref       VARCHAR(128) NOT NULL DEFAULT '',
  agreement_ref  VARCHAR(128) NOT NULL DEFAULT '',  -- the channel's agreement number
  failure_code   VARCHAR(64)  NOT NULL DEFAULT '',
  version        INT UNSIGNED NOT NULL DEFAULT 0,
  created_at     DATETIME(6)  NOT NULL,
  updated_at     DATETIME(6)  NOT NULL,
  UNIQUE KEY uq_agreements_no (agreement_no),
  UNIQUE KEY uq_agreements_caller_request (caller, request_id),
  KEY ix_agreements_account (caller, account_hash, status)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

-- Channel float for payouts. available = balance - reserved.
CREATE TABLE positions (
  channel     VARCHAR(64)  NOT NULL PRIMARY KEY,
  currency    CHAR(3)      NOT NULL,
  balance     BIGINT       NOT NULL DEFAULT 0,
  reserved    BIGINT       NOT NULL DEFAULT 0,
  synced_at   DATETIME(6)  NULL,
  updated_at  DATETIME(6)  NOT NULL,
  CHECK (reserved >= 0)
) ENGINE=InnoDB;

CREATE TABLE channel_states (
  channel     VARCHAR(64)  NOT NULL PRIMARY KEY,
  state       VARCHAR(16)  NOT NULL,                -- ENABLED / DRAINING / DISABLED
  updated_at  DATETIME(6)  NOT NULL
) ENGINE=InnoDB;

CREATE TABLE discrepancies (
  id              BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
  flow_id         BIGINT UNSIGNED NOT NULL,
  attempt_id      BIGINT UNSIGNED NOT NULL,
  recorded_status VARCHAR(16)  NOT NULL,
  reported_status VARCHAR(16)  NOT NULL,
  reported_code   VARCHAR(64)  NOT NULL DEFAULT '',
  source          VARCHAR(16)  NOT NULL,            -- callback / poll / response
  created_at      DATETIME(6)  NOT NULL,
  UNIQUE KEY uq_discrepancy (attempt_id, reported_status, source),
  KEY ix_discrepancies_flow (flow_id)
) ENGINE=InnoDB;

CREATE TABLE audit_log (
  id          BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
  operator    VARCHAR(64)  NOT NULL,
  action      VARCHAR(64)  NOT NULL,
  target      VARCHAR(128) NOT NULL,
  reason      VARCHAR(512) NOT NULL,
  detail      JSON         NULL,
  created_at  DATETIME(6)  NOT NULL,
  KEY ix_audit_target (target, id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;
