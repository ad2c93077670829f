"""Tool contracts in configsvc: register with the compatibility classifier, list, show, diff."""

from configsvc.contracts.api import ContractsApi
from configsvc.contracts.drift import DriftAudit
from configsvc.contracts.ops import ContractOps

__all__ = ["ContractOps", "ContractsApi", "DriftAudit"]
