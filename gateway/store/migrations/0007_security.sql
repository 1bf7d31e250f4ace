-- Maker-checker for manual resolutions (issue 19): a flow above [security]
-- resolve_approval_above is resolved by hand only once a second operator, an
-- approver, approves the first one's resolution. Roles themselves come from
-- the configuration ([operators.<name>] role), not from a table.
CREATE TABLE pending_resolutions (
  id              BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
  flow_id         BIGINT UNSIGNED NOT NULL,
  target_status   VARCHAR(16)  NOT NULL,              -- SUCCEEDED / FAILED: what the maker asked for
  channel_txn_id  VARCHAR(128) NOT NULL DEFAULT '',
  reason          VARCHAR(512) NOT NULL,
  status          VARCHAR(16)  NOT NULL,              -- PENDING / APPROVED / REJECTED / VOIDED
  proposed_by     VARCHAR(64)  NOT NULL,
  proposed_at     DATETIME(6)  NOT NULL,
  decided_by      VARCHAR(64)  NOT NULL DEFAULT '',
  decided_at      DATETIME(6)  NULL,
  decision_reason VARCHAR(512) NOT NULL DEFAULT '',
  -- flow_id while the resolution is PENDING or APPROVED, NULL once rejected or
  -- voided: the unique key lets a flow have at most one open resolution.
  open_flow_id    BIGINT UNSIGNED NULL,
  UNIQUE KEY uq_pending_open (open_flow_id),
  KEY ix_pending_flow (flow_id, id),
  KEY ix_pending_status (status, id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

-- ListAuditLog filters by operator and by time, newest first.
ALTER TABLE audit_log
  ADD KEY ix_audit_operator (operator, id),
  ADD KEY ix_audit_created (created_at, id);
