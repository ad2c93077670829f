"""Apply ``holdfast.etcd_roles`` steps by running ``etcdctl`` (v3 API) as a subprocess.

Connection and admin credentials travel in ``ETCDCTL_*`` environment variables and passwords on
stdin, so no secret is ever on a command line (``ps`` shows command lines to every local user).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final

from holdfast.etcdauth.roles import Step
from holdfast.store.security import EtcdSecurity

STEP_TIMEOUT: Final = 20.0
# Re-applying a layout (to add an agent) meets what the first run created: not an error.
_ALREADY: Final = ("already exists", "already granted", "already enabled")


class EtcdctlError(RuntimeError):
    """etcdctl is missing or refused a step; the message names the step, never a password."""


@dataclass(frozen=True, slots=True, kw_only=True)
class EtcdctlTarget:
    endpoints: tuple[str, ...]
    security: EtcdSecurity = field(default_factory=EtcdSecurity)  # admin user, if auth is on
    binary: str = "etcdctl"

    def environ(self, base: Mapping[str, str]) -> dict[str, str]:
        env = {k: v for k, v in base.items() if not k.startswith("ETCDCTL_")}
        env["ETCDCTL_API"] = "3"
        env["ETCDCTL_ENDPOINTS"] = ",".join(self.endpoints)
        s = self.security
        for name, value in (("CACERT", s.ca_file), ("CERT", s.cert_file), ("KEY", s.key_file)):
            if value is not None:
                env[f"ETCDCTL_{name}"] = str(value)
        if s.user:
            env["ETCDCTL_USER"] = s.user
            env["ETCDCTL_PASSWORD"] = s.password
        return env


def apply(
    steps: Sequence[Step],
    passwords: Mapping[str, str],
    target: EtcdctlTarget,
    *,
    environ: Mapping[str, str] = os.environ,
) -> list[str]:
    """Run each step in order; returns one line per step (``ok``/``exists``). Stops at a failure."""
    binary = shutil.which(target.binary)
    if binary is None:
        raise EtcdctlError(f"no {target.binary} on PATH (Debian: apt-get install etcd-client)")
    missing = sorted({s.password_of for s in steps if s.password_of} - set(passwords))
    if missing:
        raise EtcdctlError(f"no password given for user(s): {', '.join(missing)}")
    env = target.environ(environ)
    done: list[str] = []
    for step in steps:
        stdin = f"{passwords[step.password_of]}\n" if step.password_of else ""
        try:
            proc = subprocess.run(
                [binary, *step.argv],
                input=stdin.encode(),
                env=env,
                capture_output=True,
                timeout=STEP_TIMEOUT,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise EtcdctlError(f"etcdctl {' '.join(step.argv)}: timed out") from exc
        output = (proc.stderr or proc.stdout).decode("utf-8", "replace").strip()
        if proc.returncode != 0 and not any(marker in output for marker in _ALREADY):
            raise EtcdctlError(f"etcdctl {' '.join(step.argv)} failed: {output[:500]}")
        done.append(f"{'ok' if proc.returncode == 0 else 'exists'}: {' '.join(step.argv)}")
    return done
