"""Managed prompts on the request path: which version a session uses, substituted into its
request."""
