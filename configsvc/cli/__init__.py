"""``holdfastctl``: the operator commands (stdlib and the HTTP client only, so they start fast)
and ``serve``, which loads the server only when asked."""
