"""What one rate-limit check costs per request: Switchyard's sliding-window script against the
`limits` package, on a real Redis. `python -m benchmarks.rate_limits`."""
