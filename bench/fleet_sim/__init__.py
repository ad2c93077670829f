"""The fleet simulator: thousands of simulated sidecars against a real etcd cluster and real
configsvc replicas, so that fleet-scale figures are measured, not guessed.

A simulated sidecar is built from the sidecar's own modules, wired the way ``sidecar.app`` wires
them: the same watch ranges (``sidecar.config.sidecar_ranges``) through the same mirror and
``sidecar.ops.WatchFeed``, the same config state and pin table, the same first-turn claims and
pin writer (with their leases), the same health publisher (presence lease in etcd, beats to the
agent's owner replicas over HTTP). Only the HTTP surface, the provider and the filters are left
out: a request is a pin lookup (or a first-turn claim in etcd) and an observation recorded into
the sidecar's own ``SignalBook``, drawn from a traffic model.

``python -m bench.fleet_sim --sizes 100,1000,10000`` runs it; see ``bench/fleet_sim/README.md``.
"""
