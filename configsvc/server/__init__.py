"""``holdfastctl serve``: settings, limits, the aiohttp app assembled from every concern's API,
and the process lifecycle."""
