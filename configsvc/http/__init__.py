"""What every configsvc handler shares: request parsing helpers, token auth and roles."""
