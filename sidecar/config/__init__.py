"""The sidecar's configuration: etcd records decoded and validated into snapshots swapped in
atomically, and the last-known-good snapshot on disk."""
