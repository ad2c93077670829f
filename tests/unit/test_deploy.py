"""deploy/ stays in step with the programs: every command line in the Compose file, the
Kubernetes manifests and the systemd units is parsed and validated by the real settings loaders,
so a renamed flag or a bad value fails here instead of at someone's rollout."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from configsvc.cli.main import build_parser as configsvc_parser
from configsvc.server.settings import load_serve_settings
from holdfast_devtools.fakellm.cli import load_settings as fakellm_settings
from sidecar.settings.cli import load_settings as sidecar_settings

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
SECRET_ENV = {"HOLDFAST_TOKEN": "test-token-0123456789"}


def validate(argv: list[str]) -> str:
    """Run ``argv`` through the program's own settings loader; return the program's name."""
    program, args = argv[0].rsplit("/", 1)[-1], argv[1:]
    if program == "holdfast-sidecar":
        sidecar_settings(args, {})
    elif program == "holdfastctl":
        assert args[0] == "serve", argv
        parsed = configsvc_parser().parse_args(args)
        load_serve_settings(
            listen=parsed.listen,
            etcd=parsed.etcd,
            env=parsed.env,
            token=None,
            allow_no_token=parsed.allow_no_token,
            environ=SECRET_ENV,
            advertise_url=parsed.advertise_url,
        )
    elif program == "holdfast-fakellm":
        fakellm_settings(args, {})
    else:
        raise AssertionError(f"unknown program {program!r}")
    return program


def containers(doc: dict[str, Any]) -> Iterator[dict[str, Any]]:
    spec = doc.get("spec", {}).get("template", {}).get("spec", {})
    yield from spec.get("initContainers", [])
    yield from spec.get("containers", [])


def test_compose_commands_parse() -> None:
    compose = yaml.safe_load((DEPLOY / "compose" / "compose.yaml").read_text())
    seen = {
        validate(svc["command"])
        for svc in compose["services"].values()
        if isinstance(svc.get("command"), list) and svc["command"][0].startswith("holdfast")
    }
    assert seen == {"holdfast-sidecar", "holdfastctl", "holdfast-fakellm"}
    # the sidecar shares the agent's network namespace: the agent reaches it on loopback
    assert compose["services"]["sidecar"]["network_mode"] == "service:agent"


def test_kubernetes_commands_parse_and_the_sidecar_stays_on_loopback() -> None:
    seen = []
    for path in sorted((DEPLOY / "kubernetes").glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            for container in containers(doc or {}):
                args = container.get("args", [])
                if args and args[0].startswith("holdfast"):
                    seen.append(validate(args))
                    if args[0] == "holdfast-sidecar":
                        assert container["restartPolicy"] == "Always"  # a native sidecar
                        agent = args[args.index("--agent") + 1]
                        env = {e["name"]: e.get("value") for e in container.get("env", [])}
                        # inside the agent's key range of the etcd role layout
                        assert str(env["HOLDFAST_SIDECAR_ID"]).startswith(f"{agent}.")
    assert sorted(seen) == ["holdfast-sidecar", "holdfastctl"]


def env_file(path: Path) -> dict[str, str]:
    pairs = (line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)
    return {k.strip(): v.strip() for k, v in pairs if not k.lstrip().startswith("#")}


@pytest.mark.parametrize(
    ("unit", "env"),
    [
        ("holdfast-configsvc.service", "configsvc.env.example"),
        ("holdfast-sidecar@.service", "sidecar.env.example"),
    ],
)
def test_systemd_exec_start_parses_with_its_example_environment(unit: str, env: str) -> None:
    text = (DEPLOY / "systemd" / unit).read_text()
    line = next(x for x in text.splitlines() if x.startswith("ExecStart="))
    values = env_file(DEPLOY / "systemd" / env)
    command = re.sub(r"\$\{(\w+)\}", lambda m: values[m.group(1)], line.removeprefix("ExecStart="))
    validate(shlex.split(command.replace("%i", "support")))


def test_systemd_units_verify() -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed; the ExecStart lines are still parsed above")
    for unit in ("holdfast-configsvc.service", "holdfast-sidecar@.service"):
        target = Path("/tmp") / unit.replace("@.", "@support.")
        target.write_text((DEPLOY / "systemd" / unit).read_text())
        result = subprocess.run(
            [analyze, "verify", "--man=no", str(target)],
            capture_output=True, text=True, timeout=30, check=False,
        )  # fmt: skip
        problems = [
            line
            for line in (result.stdout + result.stderr).splitlines()
            if line.strip() and "is not executable" not in line  # not installed on this host
        ]
        assert problems == [], problems


def test_the_image_copies_every_package_the_distribution_has() -> None:
    pyproject = (DEPLOY.parent / "pyproject.toml").read_text()
    include = re.search(r"include = \[(.*?)\]", pyproject)
    assert include is not None
    packages = {p.strip(' "*') for p in include.group(1).split(",")}
    dockerfile = (DEPLOY / "docker" / "Dockerfile").read_text()
    copied = set(re.findall(r"^COPY (\w+) \1$", dockerfile, re.MULTILINE))
    # The development tooling is a distribution of its own (holdfast-fakellm for the Compose demo).
    assert (DEPLOY.parent / "devtools" / "pyproject.toml").is_file()
    assert copied == packages | {"devtools"}
