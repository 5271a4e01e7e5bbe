"""prefect.yaml: its shape, checked in-process, and a real deploy on a throwaway Prefect server.

The last test runs ``scripts/deploy_check.sh`` (about two minutes): a local server with its
scheduler on, the process work pool, ``prefect deploy --all`` (with the secret-feeding Prefect
variables absent, then present), one GC run through a ``--run-once`` worker, a weekly compile run
the scheduler created, run by a worker, a compile failed by its regression gate (the failed task
and the gates artifact checked on the server), and a burst of ``ragc.knowledge.changed`` events.
"""

from __future__ import annotations

import importlib
import os
import re
import signal
import subprocess
import sys
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml  # type: ignore[import-untyped]
from prefect import Flow
from prefect.client.schemas.schedules import CronSchedule
from prefect.events.schemas.deployment_triggers import DeploymentEventTrigger

from tests.conftest import ROOT

PREFECT_YAML = ROOT / "prefect.yaml"
DEPLOY_CHECK = ROOT / "scripts" / "deploy_check.sh"
POOL = "ragc-process"
EVENT = "ragc.knowledge.changed"
DEPLOYMENTS = {
    # flow name / deployment name: entrypoint
    "compile-knowledge/weekly": "flows/compile.py:compile_knowledge",
    "recompile-knowledge/on-change": "flows/recompile.py:recompile_knowledge",
    "collect-versions/daily": "flows/publish.py:collect_versions",
}
SECRET_ENV = {"ANTHROPIC_API_KEY", "RAGC_STORE"}
# A reference Prefect resolves (a Prefect variable, a block or an environment variable).
REFERENCE = re.compile(r"^\{\{\s*(prefect\.(variables|blocks)\.[\w.\-]+|\$\w+)\s*\}\}$")
# What API keys and credentials look like when pasted in by mistake.
LITERAL_SECRET = re.compile(r"sk-ant-|sk-[A-Za-z0-9]{20,}|://[^/\s:@]+:[^/\s@]+@")

DEPLOY_CHECK_TIMEOUT = 900
ENVIRONMENT_FAILURE = 3  # deploy_check.sh: the Prefect server could not start


def _config() -> dict[str, Any]:
    loaded = yaml.safe_load(PREFECT_YAML.read_text(encoding="utf-8"))
    assert isinstance(loaded, dict)
    return loaded


def _flow(entrypoint: str) -> Flow[Any, Any]:
    path, _, name = entrypoint.partition(":")
    assert (ROOT / path).is_file(), f"{path} does not exist"
    module = importlib.import_module(path.removesuffix(".py").replace("/", "."))
    flow = getattr(module, name)
    assert isinstance(flow, Flow), f"{entrypoint} is not a Prefect flow"
    return flow


def _by_name(config: dict[str, Any]) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = {}
    for deployment in config["deployments"]:
        flow = _flow(deployment["entrypoint"])
        found[f"{flow.name}/{deployment['name']}"] = deployment
    return found


def _cron_fields(deployment: dict[str, Any]) -> list[str]:
    [schedule] = deployment["schedules"]
    cron = CronSchedule(cron=schedule["cron"], timezone=schedule.get("timezone", "UTC"))
    assert cron.timezone == "UTC"
    fields: list[str] = cron.cron.split()
    return fields


@pytest.mark.unit
def test_prefect_yaml_declares_the_three_deployments_on_the_process_pool() -> None:
    config = _config()
    deployments = _by_name(config)
    assert set(deployments) == set(DEPLOYMENTS)
    for name, deployment in deployments.items():
        assert deployment["entrypoint"] == DEPLOYMENTS[name]
        assert deployment["work_pool"]["name"] == POOL
        # Parameters the flow accepts (the pydantic models validate the nested `params`).
        _flow(deployment["entrypoint"]).validate_parameters(deployment.get("parameters", {}))

    [pull] = config["pull"]
    directory = pull["prefect.deployments.steps.set_working_directory"]["directory"]
    step_ids = {
        step_config.get("id") for step in config.get("build") or [] for step_config in step.values()
    }
    match = re.fullmatch(r"\{\{\s*([\w\-]+)\.stdout\s*\}\}", directory)
    assert match, f"pull directory {directory!r} is not a build step's output"
    assert match.group(1) in step_ids, f"pull directory {directory!r} names no build step"


@pytest.mark.unit
def test_prefect_yaml_schedules_and_trigger() -> None:
    deployments = _by_name(_config())
    weekly = deployments["compile-knowledge/weekly"]
    assert weekly["parameters"]["params"]["knowledge"] == "examples"
    assert weekly["parameters"]["params"]["publish"] is True
    _, _, day, month, weekday = _cron_fields(weekly)
    assert (day, month) == ("*", "*"), "the full compile runs once a week"
    assert weekday != "*", "the full compile runs once a week"
    _, _, day, month, weekday = _cron_fields(deployments["collect-versions/daily"])
    assert (day, month, weekday) == ("*", "*", "*"), "the GC runs every day"

    on_change = deployments["recompile-knowledge/on-change"]
    assert not on_change.get("schedules")
    [spec] = on_change["triggers"]
    trigger = DeploymentEventTrigger.model_validate(spec)
    assert trigger.expect == {EVENT}
    assert spec["match"]["prefect.resource.id"].startswith("ragc.knowledge.")
    assert trigger.threshold == 1
    assert trigger.within.total_seconds() == 60
    assert trigger.enabled
    # The trigger's `params` replaces the deployment's whole: it must repeat the same settings.
    params = spec["parameters"]["params"]
    assert "event.payload.changed" in params.pop("changed")
    assert "event.resource.id" in params.pop("knowledge")  # the knowledge the event names
    defaults = dict(on_change["parameters"]["params"])
    assert defaults.pop("knowledge") == weekly["parameters"]["params"]["knowledge"]
    assert (
        params
        == defaults
        == {k: v for k, v in weekly["parameters"]["params"].items() if k != "knowledge"}
    )


@pytest.mark.unit
@pytest.mark.parametrize(
    ("resource", "payload", "knowledge", "changed"),
    [
        (
            "ragc.knowledge.examples",
            {"changed": ["faq.jsonl", "help/account.html"]},
            "examples",
            ["faq.jsonl", "help/account.html"],
        ),
        ("ragc.knowledge.handbook", {}, "handbook", []),
        ("ragc.knowledge.ragc.knowledge.x", {}, "ragc.knowledge.x", []),  # the prefix once
    ],
)
def test_trigger_renders_the_knowledge_named_and_the_changed_paths(
    resource: str, payload: dict[str, Any], knowledge: str, changed: list[str]
) -> None:
    """What the server's run-deployment action makes of the trigger's parameters for an event."""
    from prefect.server.events.actions import RunDeployment  # noqa: PLC0415
    from prefect.server.events.schemas.events import ReceivedEvent  # noqa: PLC0415
    from prefect.utilities.schema_tools.hydration import HydrationContext, hydrate  # noqa: PLC0415

    on_change = _by_name(_config())["recompile-knowledge/on-change"]
    action = RunDeployment.model_validate(  # validates the templates, as creating the trigger does
        {
            "source": "selected",
            "deployment_id": uuid.uuid4(),
            "parameters": on_change["triggers"][0]["parameters"],
        }
    )
    parameters = action.parameters
    assert parameters is not None
    RunDeployment._upgrade_v1_templates(parameters)  # as render_parameters() does
    event = ReceivedEvent.model_validate(
        {
            "id": uuid.uuid4(),
            "occurred": datetime.now(UTC),
            "event": EVENT,
            "resource": {"prefect.resource.id": resource},
            "payload": payload,
        }
    )
    context = HydrationContext(render_jinja=True, jinja_context={"event": event})
    rendered = hydrate(parameters, context)
    assert rendered["params"]["changed"] == changed
    assert rendered["params"]["knowledge"] == knowledge
    _flow(on_change["entrypoint"]).validate_parameters(rendered)


@pytest.mark.unit
def test_prefect_yaml_takes_secrets_from_references_only() -> None:
    config = _config()
    text = PREFECT_YAML.read_text(encoding="utf-8")
    assert not LITERAL_SECRET.search(text), "prefect.yaml contains what looks like a credential"
    for name in SECRET_ENV:
        value = os.environ.get(name)
        if value and len(value) >= 8:
            assert value not in text, f"prefect.yaml contains the value of ${name}"
    for name, deployment in _by_name(config).items():
        env = deployment["work_pool"].get("job_variables", {}).get("env", {})
        assert set(env) >= SECRET_ENV, f"{name}: env lacks {SECRET_ENV - set(env)}"
        for key, value in env.items():
            assert REFERENCE.match(str(value)), f"{name}: env {key} is a literal, not a reference"


def _environment() -> dict[str, str]:
    """The test process's environment without Prefect settings (the script makes its own)."""
    return {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}


@pytest.mark.integration
@pytest.mark.slow  # a server, workers and five flow runs (two compiles): two minutes
def test_deploy_check_script_deploys_and_runs_on_a_local_server(tmp_path: Path) -> None:
    process = subprocess.Popen(
        ["bash", str(DEPLOY_CHECK)],
        cwd=ROOT,
        env=_environment() | {"TMPDIR": str(tmp_path), "DEPLOY_CHECK_PYTHON": sys.executable},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        stdout, stderr = process.communicate(timeout=DEPLOY_CHECK_TIMEOUT)
    except subprocess.TimeoutExpired:
        # SIGTERM lets the script's trap stop the server and the worker it started.
        process.send_signal(signal.SIGTERM)
        try:
            stdout, stderr = process.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            stdout, stderr = process.communicate()
        pytest.fail(
            f"deploy_check.sh took over {DEPLOY_CHECK_TIMEOUT}s\n{stdout[-4000:]}\n{stderr[-4000:]}"
        )
    report = f"exit status {process.returncode}\n--- stdout\n{stdout}\n--- stderr\n{stderr[-6000:]}"
    if process.returncode == ENVIRONMENT_FAILURE and os.environ.get("CI") != "true":
        reason = next(
            (line for line in stderr.splitlines() if line.startswith("deploy-check:")), stderr
        )
        pytest.skip(f"no local Prefect server here: {reason.strip()}")
    assert process.returncode == 0, report
    assert "collect-versions/daily completed" in stdout, report
    assert "a run the scheduler created completed and published" in stdout, report
    assert "a failing gate: Failed run, failed task gate-regression" in stdout, report
    assert "1 recompile run" in stdout, report
    assert "from its git repository and published" in stdout, report
