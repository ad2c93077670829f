"""Network guards both processes share: which hosts may be called, DNS answers checked at connect
time, the Host-header check, and aiohttp's logs without request bytes."""
