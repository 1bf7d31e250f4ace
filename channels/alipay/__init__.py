"""Alipay Open Platform channel: adapter, wire format, simulator."""
