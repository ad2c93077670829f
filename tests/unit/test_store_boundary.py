"""Outside ``holdfast.store`` code depends on the ``Store`` protocol, never on the etcd adapter:
only the store package itself (and its factory) imports ``holdfast.store.etcd``."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CONCRETE = "holdfast.store.etcd"


def imported_modules(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return found


def test_runtime_code_outside_the_store_does_not_import_the_etcd_adapter() -> None:
    offenders = []
    for package in ("sidecar", "configsvc", "holdfast"):
        for path in sorted((ROOT / package).rglob("*.py")):
            if path.is_relative_to(ROOT / "holdfast" / "store"):
                continue
            if any(m == CONCRETE or m.startswith(CONCRETE + ".") for m in imported_modules(path)):
                offenders.append(str(path.relative_to(ROOT)))
    assert offenders == []


def test_the_scan_sees_an_adapter_import(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text("from holdfast.store.etcd import EtcdStore\nimport holdfast.store.etcd\n")
    assert {CONCRETE, CONCRETE + ".EtcdStore"} <= imported_modules(sample)
