"""Joint loans (联合贷): each repayment split between its funders to the cent, and every funder settled.

* :mod:`gateway.splits.allocation` — the pure arithmetic: shares, the split of
  an amount, the split of a refund against what each funder still holds.
* :mod:`gateway.splits.funders` — the configured funders (``[funders]``).
* :mod:`gateway.splits.settlement` — once per business day per funder: the
  net of the day, paid out once through the normal payout path, or carried.
* :mod:`gateway.splits.statement` — the per-funder settlement statement (CSV).
"""
