"""Transactional outbox: rows written with state changes, relayed to Kafka.

* ``writer``: builds the events; gateway/store/outbox.py writes their rows inside the
  transaction of the state change they report (the terminal transition's).
* ``relay``: :class:`~gateway.outbox.relay.OutboxRelay` publishes them, at least once.
* ``config``: :class:`~gateway.outbox.config.RelayConfig`, from the ``[kafka]`` table.
* ``codec``: value encoding (protobuf / JSON) and message headers.

The contract for consumers is docs/EVENTS.md; the reference consumer is gateway/results.py.
"""
