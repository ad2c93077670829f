"""Token and cost budgets on the request path: admission against the ledger, settlement on the
provider's usage, and the sidecar's side of fleet-wide slices."""
