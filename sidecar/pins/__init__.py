"""Session pins: the table, the request-path lookup, first-turn claims in etcd, the background
writer and the copy on disk."""
