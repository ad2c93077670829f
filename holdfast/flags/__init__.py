"""Feature flags in flagd's definition format: validation, ``$ref`` resolution, evaluation.

Pure code, no I/O: configsvc validates files with it, the sidecar evaluates with it.
"""
