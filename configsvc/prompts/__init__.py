"""Managed prompt versions: create, evaluate against cases, activate behind the gate, roll back."""
