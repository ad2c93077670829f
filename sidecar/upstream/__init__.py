"""Talking to providers: the pooled HTTP client, credentials, typed errors."""
