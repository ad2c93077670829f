"""Versioned tool contracts: schema checks, semver, compatibility, circuit breaking. Pure code."""
