"""The sidecar's HTTP surface: the app and its middlewares (errors, hostile input), and the drain
on SIGTERM."""
