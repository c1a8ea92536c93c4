"""gRPC transport: servicers, conversions, the error table and interceptors."""
