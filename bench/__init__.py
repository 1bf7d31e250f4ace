"""Performance and fault harnesses (``paygate bench ...``)."""
