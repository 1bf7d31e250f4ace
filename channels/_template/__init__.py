"""Template for a new channel package: copy to ``channels/<name>/`` and fill in.

The three pieces (see docs/ADDING_A_CHANNEL.md):

* ``wire.py``      pure protocol code: signing, amounts, the explicit code tables;
* ``adapter.py``   ``build(spec) -> Channel``: settings validation and all HTTP to the channel;
* ``simulator.py`` ``create(behaviour, *, notify_url=None, **kw) -> SimulatorHandle``:
                   the server side of the protocol on simkit, for tests and demos.
"""
