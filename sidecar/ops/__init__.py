"""What on-call reads: ``/healthz``, ``/readyz``, ``/status``, ``/metrics``, and the health
snapshot published to etcd."""
