"""Template for a new channel package: copy to ``channels/<name>/`` and fill in.

The four pieces (see docs/ADDING_A_CHANNEL.md):

* ``wire.py``      pure protocol code: signing, amounts, the explicit code tables;
* ``adapter.py``   ``build(spec) -> Channel``: settings validation and all HTTP to the channel;
* ``simulator.py`` ``create(behaviour, *, notify_url=None, **kw) -> SimulatorHandle``:
                   the server side of the protocol on simkit, for tests and demos;
* ``statement.py`` the daily statement format: ``iter_lines`` (the parser), the
                   simulator's ``write_statement``, ``FORMAT`` for the registry.
"""
