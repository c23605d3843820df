"""Access control for service invocation: the pure decision (Dapr ACL semantics)."""
