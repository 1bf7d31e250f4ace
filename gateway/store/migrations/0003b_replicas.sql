-- Several replicas, one truth (issue 13).
--
-- Each run of a gateway process (an incarnation) registers here and beats a
-- heartbeat; recovery takes a SENDING attempt or a failover cut short only
-- when the incarnation that recorded it is no longer alive (stopped, replaced
-- by a restart of the same replica_id, or silent for longer than
-- [replicas] dead_after_s). Liveness is judged by the database's clock only
-- (UTC_TIMESTAMP), so replicas' clocks need not agree.
CREATE TABLE replicas (
  incarnation CHAR(26)     NOT NULL PRIMARY KEY,   -- a ULID per process start
  replica_id  VARCHAR(64)  NOT NULL,               -- [server] replica_id (default hostname-pid)
  started_at  DATETIME(6)  NOT NULL,
  last_seen   DATETIME(6)  NOT NULL,
  stopped_at  DATETIME(6)  NULL,                   -- a clean stop, or superseded by a restart
  KEY ix_replicas_replica (replica_id, started_at),
  KEY ix_replicas_seen (last_seen)
) ENGINE=InnoDB;

-- The incarnation that recorded (and so sends, and fails over) each attempt;
-- '' for attempts recorded before this migration (nobody is working on them).
ALTER TABLE attempts
  ADD COLUMN incarnation CHAR(26) NOT NULL DEFAULT '',
  -- every replica folds in the outcomes the others recorded, by finish time
  ADD KEY ix_attempts_finished (finished_at);

-- Every operator write bumps the row's version, so a replica reading the
-- (tiny) table sees each change exactly once, whatever the clocks say.
ALTER TABLE channel_states
  ADD COLUMN version INT UNSIGNED NOT NULL DEFAULT 0;
