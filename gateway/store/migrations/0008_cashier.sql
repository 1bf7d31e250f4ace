-- Payer-initiated collections (主动还款, issue 20): flows of kind COLLECT, whose attempt
-- (operation 'collect') is a channel order the borrower pays in the channel's cashier.
-- One row per COLLECT flow, next to it: what kind of cashier was asked for, when the
-- order expires, the cashier the channel gave (handed out again on every replay), and
-- whether a close was asked for (the caller's, or the expiry's). Times are UTC.
CREATE TABLE collections (
  flow_id            BIGINT UNSIGNED NOT NULL PRIMARY KEY,
  cashier_kind       VARCHAR(16)  NOT NULL,             -- qr / h5 / in_app
  expires_at         DATETIME(6)  NOT NULL,             -- the channel refuses the payment after it
  cashier            JSON         NULL,                 -- channels.contract.Cashier.to_json(), NULL until given
  cashier_channel    VARCHAR(64)  NOT NULL DEFAULT '',  -- the channel whose cashier it is
  close_requested_at DATETIME(6)  NULL,                 -- CloseCollection, or the expiry reached
  close_reason       VARCHAR(16)  NOT NULL DEFAULT '',  -- CALLER / EXPIRED
  created_at         DATETIME(6)  NOT NULL,
  updated_at         DATETIME(6)  NOT NULL,
  KEY ix_collections_expiry (expires_at)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;
