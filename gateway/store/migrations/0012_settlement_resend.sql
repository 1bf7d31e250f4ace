-- Re-sending a funder's settlement payout that the bank refused definitely (docs/SPLITS.md,
-- "Re-sending a failed payout"). `payout_attempt` is 0 for the first payout (request id
-- settle:<funder>:<yyyymmdd>) and n for the n-th re-send (…:r<n>); the re-send's conditional
-- UPDATE checks it, so two operators or replicas cannot both re-send. Each re-send keeps the
-- payout it replaced in `settlement_payouts` (one row per replaced attempt: its request id, its
-- FAILED flow, who re-sent it and why); the settlement row keeps the current payout.
ALTER TABLE settlements ADD COLUMN payout_attempt INT NOT NULL DEFAULT 0;

CREATE TABLE settlement_payouts (
  id                 BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
  funder_id          VARCHAR(32)  NOT NULL,
  business_day       DATE         NOT NULL,
  attempt            INT          NOT NULL,          -- the replaced payout's attempt number
  request_id         VARCHAR(64)  NOT NULL,          -- the replaced payout's request id
  flow_no            CHAR(26)     NOT NULL,          -- its flow, FAILED
  replaced_by        VARCHAR(64)  NOT NULL,          -- the request id of the re-send
  operator           VARCHAR(64)  NOT NULL,
  reason             VARCHAR(512) NOT NULL,
  created_at         DATETIME(6)  NOT NULL,
  UNIQUE KEY ux_settlement_payouts_attempt (funder_id, business_day, attempt),
  UNIQUE KEY ux_settlement_payouts_flow (flow_no)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

-- The re-send looks for open reconciliation items of the failed payout's flow.
ALTER TABLE recon_items ADD KEY ix_recon_items_flow (flow_id);
