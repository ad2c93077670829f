"""Progressive rollouts: the plan's state machine, its audited operations, and the controller."""
