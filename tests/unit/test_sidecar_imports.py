"""What a sidecar keeps resident: the Python jsonschema package (~4 MB) is loaded only when a
contract's schema or a flag file is checked, never by starting a sidecar without contracts."""

from __future__ import annotations

import json
import subprocess
import sys

PROBE = """
import json, sys
import sidecar.main
before = sorted(m for m in sys.modules if m.split('.')[0] in ('jsonschema', 'referencing'))
from holdfast.contracts.schema import check_schema
check_schema({'type': 'object', 'properties': {'q': {'$ref': '#/$defs/q'}},
              '$defs': {'q': {'type': 'string'}}}, what='args schema', object_args=True)
after = 'jsonschema' in sys.modules
print(json.dumps([before, after]))
"""


def test_a_sidecar_starts_without_the_python_jsonschema_package() -> None:
    done = subprocess.run(
        [sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=60, check=True
    )
    before, after = json.loads(done.stdout.strip().splitlines()[-1])
    assert before == []
    assert after  # loaded on first use, and the check still runs
