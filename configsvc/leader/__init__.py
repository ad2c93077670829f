"""Leader election through etcd and the loop every leader-only controller runs."""
