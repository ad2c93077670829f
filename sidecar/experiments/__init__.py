"""A/B experiments on the sidecar: feedback from the agent and outcome counts published to etcd."""
