-- Joint loans (联合贷, issue 18, docs/SPLITS.md).
-- A split withhold keeps its shares on the flow (JSON, as requested: kind + ordered
-- [funder_id, value] pairs); a refund of one is marked {"refund": true}. When the withhold
-- SUCCEEDS its parts (the small orders, 小订单) are written to `splits` in the same
-- transaction as the terminal transition; a succeeded refund's parts go to `refund_splits`
-- in its own terminal transaction, and add up on `splits.refunded`. Times are UTC; the
-- business day of a part is the day (business timezone) of its `succeeded_at`.
ALTER TABLE flows ADD COLUMN split_shares TEXT NULL;
-- A plan instalment with shares (plans.proto InstalmentSpec.shares): its withholds carry them.
ALTER TABLE instalments ADD COLUMN split_shares TEXT NULL;

CREATE TABLE splits (
  id            BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
  flow_id       BIGINT UNSIGNED NOT NULL,            -- the withhold (the big order)
  seq           SMALLINT UNSIGNED NOT NULL,          -- the share's place in the request
  funder_id     VARCHAR(32)  NOT NULL,
  amount        BIGINT       NOT NULL,               -- the funder's part, minor units
  refunded      BIGINT       NOT NULL DEFAULT 0,     -- taken back by succeeded refunds
  currency      CHAR(3)      NOT NULL,
  succeeded_at  DATETIME(6)  NOT NULL,
  UNIQUE KEY ux_splits_flow_funder (flow_id, funder_id),
  KEY ix_splits_funder_day (funder_id, succeeded_at),
  CONSTRAINT ck_splits_refunded CHECK (refunded >= 0 AND refunded <= amount)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

CREATE TABLE refund_splits (
  id                BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
  refund_flow_id    BIGINT UNSIGNED NOT NULL,
  original_flow_id  BIGINT UNSIGNED NOT NULL,
  seq               SMALLINT UNSIGNED NOT NULL,
  funder_id         VARCHAR(32)  NOT NULL,
  amount            BIGINT       NOT NULL,           -- refunded from this funder, minor units (may be 0)
  currency          CHAR(3)      NOT NULL,
  succeeded_at      DATETIME(6)  NOT NULL,
  UNIQUE KEY ux_refund_splits (refund_flow_id, funder_id),
  KEY ix_refund_splits_funder_day (funder_id, succeeded_at),
  KEY ix_refund_splits_original (original_flow_id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

-- One row per funder and business day, written once (the unique key is the claim: a second
-- replica or a re-run finds it); the payout's request id is derived from funder and day.
CREATE TABLE settlements (
  id                 BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
  funder_id          VARCHAR(32)  NOT NULL,
  business_day       DATE         NOT NULL,
  currency           CHAR(3)      NOT NULL,
  withheld           BIGINT       NOT NULL,
  refunded           BIGINT       NOT NULL,
  carried_in         BIGINT       NOT NULL,          -- <= 0
  net                BIGINT       NOT NULL,
  paid               BIGINT       NOT NULL,          -- >= 0
  carried_out        BIGINT       NOT NULL,          -- <= 0
  orders             INT          NOT NULL,
  refund_orders      INT          NOT NULL,
  status             VARCHAR(16)  NOT NULL,          -- PAYING / PAID / PAYOUT_FAILED / REPORTED / CARRIED
  payout_request_id  VARCHAR(64)  NOT NULL DEFAULT '',
  payout_flow_no     CHAR(26)     NOT NULL DEFAULT '',
  created_at         DATETIME(6)  NOT NULL,
  updated_at         DATETIME(6)  NOT NULL,
  UNIQUE KEY ux_settlements_funder_day (funder_id, business_day),
  KEY ix_settlements_day (business_day)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;
