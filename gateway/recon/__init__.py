"""Reconciliation (对账): every flow against the channels' own statements, every day.

``model`` holds the decisions (no I/O), ``service`` the use cases, ``ports`` what they need
from the store (``gateway/store/recon.py``), ``config`` the ``[reconciliation]`` table.
docs/RECONCILIATION.md.
"""
