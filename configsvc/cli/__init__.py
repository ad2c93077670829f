"""``holdfastctl``: the operator commands (stdlib and the HTTP client only, so they start fast)
and ``serve``, which loads the server only when asked. Entry point: ``cli.main:main``; nothing
imports this package, so it names nothing (tests/unit/test_configsvc_cli_imports.py checks
what a command loads)."""
