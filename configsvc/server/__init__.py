"""``holdfastctl serve``: settings, limits, the aiohttp app assembled from every concern's API,
and the process lifecycle.

No re-exports here on purpose: every ``holdfastctl`` command imports ``server.limits`` for
``serve``'s options, and a face naming ``build_app`` or ``run`` would load aiohttp and the etcd
client for all of them. Import ``server.app``, ``server.run`` and ``server.settings`` directly.
"""
