"""gRPC entrypoints: servicers, interceptors, status mapping, conversions."""
