"""WeChat Pay API v3 channel: adapter, wire format, simulator."""
