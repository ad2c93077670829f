"""The fleet's health: sidecars' snapshots aggregated per release and category, the status API,
and the health gate of rollouts."""
