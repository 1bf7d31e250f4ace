-- The poller's bulkhead per channel (gateway/poller.py): once a poller holds its share of one
-- channel's rows (a bank whose queries are slow), it claims the other channels' due rows channel
-- by channel on this index, so a claim reads a few index entries per channel and never walks the
-- slow bank's backlog in due order.
ALTER TABLE poll_queue
  ADD KEY ix_poll_channel_due (channel, due_at);
