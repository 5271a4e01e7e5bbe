"""deploy/: the image, compose, nginx and Kubernetes manifests agree with the code.

Nothing is run here (no Docker engine, no cluster): every file is parsed, and what it names —
environment variables, CLI options, ports, probe paths, the work pool, the uv version — is
checked against the code that reads it, so renaming a setting, an option or a route breaks this
test instead of a deployment.
"""

from __future__ import annotations

import ast
import json
import re
import shlex
from collections.abc import Iterator, Mapping, Sequence
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import typer.main
import yaml  # type: ignore[import-untyped]
from typer.core import TyperGroup
from typer.testing import CliRunner

from providers import PROVIDERS
from ragc.cli import app as cli
from schemas.settings import PREFIX, Environment
from serving.app import create_app
from serving.settings import ServeSettings

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
DOCKERFILE = DEPLOY / "Dockerfile"
COMPOSE = DEPLOY / "compose.yaml"
NGINX = DEPLOY / "nginx.conf"

SOURCE_PACKAGES = ("ragc", "serving", "flows", "tasks", "providers", "stores", "schemas")
"""The packages whose modules read ``RAGC_*`` variables (settings, CLI options, webhook, flows,
the providers and the model cache); every module in them is scanned, so a move is not a miss."""

RAGC_VAR = re.compile(r"RAGC_[A-Z0-9_]+")  # digits too: RAGC_L3_BUDGET
SECRETISH = re.compile(r"TOKEN|SECRET|PASSWORD|API_KEY|DSN")
REFERENCE = re.compile(r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}")
PLACEHOLDER = "REPLACE_ME"
SERVICE_PORT = 8000

RAGC_SERVICES = ("migrate", "prefect-worker", "api-1", "api-2")
API_SERVICES = ("api-1", "api-2")
K8S_KINDS = {
    "configmap.yaml": {"ConfigMap"},
    "secret.example.yaml": {"Secret"},
    "api-deployment.yaml": {"Deployment"},
    "api-service.yaml": {"Service"},
    "worker-deployment.yaml": {"Deployment"},
    "db-upgrade-job.yaml": {"Job"},
    "pdb.yaml": {"PodDisruptionBudget"},
}


# --- loading ---------------------------------------------------------------------------------


def _docs(path: Path) -> list[Any]:
    return [doc for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")) if doc is not None]


@cache
def _compose() -> dict[str, Any]:
    (doc,) = _docs(COMPOSE)
    assert isinstance(doc, dict)
    return doc


def _services() -> dict[str, dict[str, Any]]:
    services = _compose()["services"]
    assert isinstance(services, dict)
    return services


@cache
def _k8s() -> dict[str, list[dict[str, Any]]]:
    return {path.name: _docs(path) for path in sorted(K8S.glob("*.yaml"))}


def _k8s_one(kind: str, name_part: str = "") -> dict[str, Any]:
    found = [
        doc
        for docs in _k8s().values()
        for doc in docs
        if doc["kind"] == kind and name_part in doc["metadata"]["name"]
    ]
    assert len(found) == 1, f"expected one {kind} named *{name_part}*, found {len(found)}"
    return found[0]


def _api_deployment() -> dict[str, Any]:
    (doc,) = _docs(K8S / "api-deployment.yaml")
    assert isinstance(doc, dict)
    return doc


def _worker_deployment() -> dict[str, Any]:
    (doc,) = _docs(K8S / "worker-deployment.yaml")
    assert isinstance(doc, dict)
    return doc


def _job() -> dict[str, Any]:
    (doc,) = _docs(K8S / "db-upgrade-job.yaml")
    assert isinstance(doc, dict)
    return doc


def _containers(workload: Mapping[str, Any]) -> list[dict[str, Any]]:
    containers = workload["spec"]["template"]["spec"]["containers"]
    assert isinstance(containers, list)
    return containers


def _k8s_workloads() -> Iterator[dict[str, Any]]:
    for docs in _k8s().values():
        for doc in docs:
            if doc["kind"] in {"Deployment", "Job", "StatefulSet", "DaemonSet"}:
                yield doc


def _environment(service: Mapping[str, Any]) -> dict[str, str]:
    """A compose service's environment, list or mapping form, as a mapping."""
    raw = service.get("environment") or {}
    if isinstance(raw, list):
        return dict(item.split("=", 1) if "=" in item else (item, "") for item in raw)
    return {str(key): "" if value is None else str(value) for key, value in raw.items()}


def _command(raw: str | Sequence[str]) -> list[str]:
    return shlex.split(raw) if isinstance(raw, str) else [str(part) for part in raw]


def _resolve(value: str) -> str:
    """A compose value with each ``${VAR...}`` replaced by its default (``:?``: a placeholder)."""

    def one(match: re.Match[str]) -> str:
        op = match["op"] or ""
        if op.endswith("-"):
            return match["arg"] or ""
        return f"<{match['name']}>"

    return REFERENCE.sub(one, value)


@cache
def _dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of the Dockerfile, continuation lines joined."""
    lines: list[tuple[str, str]] = []
    pending = ""
    for raw in DOCKERFILE.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line, pending = pending + line, ""
        instruction, _, arguments = line.partition(" ")
        lines.append((instruction.upper(), arguments.strip()))
    return lines


def _docker(instruction: str) -> list[str]:
    return [args for name, args in _dockerfile() if name == instruction]


def _docker_env() -> dict[str, str]:
    env: dict[str, str] = {}
    for args in _docker("ENV"):
        for item in shlex.split(args):
            key, _, value = item.partition("=")
            env[key] = value
    return env


@cache
def _vars_the_code_reads() -> frozenset[str]:
    """Every string literal that is exactly a ``RAGC_*`` name in the modules that read them."""
    names: set[str] = set()
    for path in sorted(p for package in SOURCE_PACKAGES for p in (ROOT / package).rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Constant)
                and isinstance(node.value, str)
                and RAGC_VAR.fullmatch(node.value)
            ):
                names.add(node.value)
    return frozenset(names | _settings_variables())


def _settings_variables() -> set[str]:
    """The variables :class:`schemas.settings.Environment` reads (one per field)."""
    return {f"{PREFIX}{name.upper()}" for name in Environment.model_fields}


def _vars_the_manifests_set() -> dict[str, set[str]]:
    """``RAGC_*`` (and every other) variable each manifest sets, by where it is set."""
    where: dict[str, set[str]] = {}
    for name, service in _services().items():
        where[f"compose:{name}"] = set(_environment(service))
    for filename, docs in _k8s().items():
        for doc in docs:
            label = f"k8s:{filename}:{doc['kind']}/{doc['metadata']['name']}"
            keys: set[str] = set()
            if doc["kind"] in {"ConfigMap", "Secret"}:
                keys |= set(doc.get("data") or {}) | set(doc.get("stringData") or {})
            if doc["kind"] in {"Deployment", "Job"}:
                for container in _containers(doc):
                    keys |= {item["name"] for item in container.get("env") or []}
            where[label] = keys
    where["Dockerfile"] = set(_docker_env())
    return where


# --- every file parses -----------------------------------------------------------------------


def test_every_yaml_file_parses_and_the_expected_files_exist() -> None:
    for required in (DOCKERFILE, COMPOSE, NGINX, DEPLOY / "README.md"):
        assert required.is_file(), f"{required.relative_to(ROOT)} is missing"
    yamls = sorted([*DEPLOY.rglob("*.yaml"), *DEPLOY.rglob("*.yml")])
    assert yamls
    for path in yamls:
        assert _docs(path), f"{path.relative_to(ROOT)} has no YAML document"
    assert set(K8S_KINDS) <= {path.name for path in K8S.glob("*.yaml")}


def test_k8s_files_hold_the_expected_kinds_with_names_and_api_versions() -> None:
    for filename, docs in _k8s().items():
        for doc in docs:
            assert isinstance(doc, dict), filename
            assert doc.get("apiVersion"), f"{filename}: a document without apiVersion"
            assert doc.get("metadata", {}).get("name"), f"{filename}: a resource without a name"
        if filename in K8S_KINDS:
            assert {doc["kind"] for doc in docs} == K8S_KINDS[filename], filename
    api_versions = {doc["kind"]: doc["apiVersion"] for docs in _k8s().values() for doc in docs}
    assert api_versions["Deployment"] == "apps/v1"
    assert api_versions["Job"] == "batch/v1"
    assert api_versions["PodDisruptionBudget"] == "policy/v1"


# --- the image -------------------------------------------------------------------------------


def _makefile_uv_version() -> str:
    match = re.search(
        r"^UV_VERSION\s*:?=\s*(\S+)", (ROOT / "Makefile").read_text(encoding="utf-8"), re.M
    )
    assert match, "the Makefile no longer pins UV_VERSION"
    return match[1]


def test_dockerfile_pins_the_makefiles_uv_on_python_311_slim() -> None:
    assert _docker("FROM") == ["python:3.11-slim"]
    pins = re.findall(r"uv==([0-9][\w.]*)", " ".join(_docker("RUN")))
    assert pins, "the Dockerfile does not pip-install a pinned uv"
    assert set(pins) == {_makefile_uv_version()}


def test_dockerfile_layers_dependencies_before_the_source() -> None:
    steps = _dockerfile()
    copy_lock = next(
        i for i, (name, args) in enumerate(steps) if name == "COPY" and "uv.lock" in args
    )
    assert "pyproject.toml" in steps[copy_lock][1]
    syncs = [i for i, (name, args) in enumerate(steps) if name == "RUN" and "uv sync" in args]
    assert syncs, "no `uv sync` in the Dockerfile"
    assert all("--frozen" in steps[i][1] and "--no-dev" in steps[i][1] for i in syncs)
    source_copies = [i for i, (name, _) in enumerate(steps) if name == "COPY" and i != copy_lock]
    # The first sync sees only pyproject.toml + uv.lock; every source COPY comes after it.
    assert copy_lock < syncs[0] < min(source_copies)
    assert "--no-install-project" in steps[syncs[0]][1]
    assert any(i > max(source_copies) for i in syncs), "the project itself is never installed"


def test_dockerfile_copies_every_package_the_wheel_ships() -> None:
    copied: set[str] = set()
    for args in _docker("COPY"):
        parts = [part for part in shlex.split(args) if not part.startswith("--")]
        for source in parts[:-1]:
            assert (ROOT / source).exists(), f"COPY {source}: no such path in the project"
            copied.add(source.rstrip("/"))
    wheel = re.search(
        r"\[tool\.hatch\.build\.targets\.wheel\]\s*packages\s*=\s*(\[[^\]]*\])",
        (ROOT / "pyproject.toml").read_text(encoding="utf-8"),
    )
    assert wheel
    packages = set(json.loads(wheel[1]))
    assert packages <= copied, f"not copied into the image: {sorted(packages - copied)}"
    assert {"pyproject.toml", "uv.lock", "README.md", "prefect.yaml"} <= copied


def test_dockerfile_environment_user_port_healthcheck_and_command() -> None:
    env = _docker_env()
    assert env["UV_LINK_MODE"] == "copy"
    assert env["UV_COMPILE_BYTECODE"] == "1"
    assert env["PREFECT_SERVER_ANALYTICS_ENABLED"] == "false"
    assert env["DO_NOT_TRACK"] == "1"
    users = _docker("USER")
    assert users, "the image runs as root"
    assert users[-1].split(":")[0] not in {"root", "0"}
    assert _docker("EXPOSE") == [str(SERVICE_PORT)]
    (healthcheck,) = _docker("HEALTHCHECK")
    probe = json.loads(healthcheck.split(" CMD ", 1)[1])  # exec form: no shell in the way
    assert probe[:2] == ["python", "-c"]
    assert "urllib" in healthcheck
    assert f"127.0.0.1:{SERVICE_PORT}/healthz" in healthcheck
    (cmd,) = _docker("CMD")
    assert json.loads(cmd) == ["ragc", "serve", "--host", "0.0.0.0", "--port", str(SERVICE_PORT)]


# --- compose ---------------------------------------------------------------------------------


def test_compose_declares_the_services_on_the_pinned_images() -> None:
    services = _services()
    assert set(services) == {
        "redis",
        "postgres",
        "migrate",
        "prefect-server",
        "prefect-worker",
        "api-1",
        "api-2",
        "proxy",
    }
    assert services["redis"]["image"] == "redis:7-alpine"
    assert services["postgres"]["image"] == "postgres:15-alpine"
    assert services["proxy"]["image"] == "nginx:1.27-alpine"
    prefect_pin = re.search(
        r'"prefect==([^"]+)"', (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    )
    assert prefect_pin
    prefect_yaml = yaml.safe_load((ROOT / "prefect.yaml").read_text(encoding="utf-8"))
    assert prefect_yaml["prefect-version"] == prefect_pin[1]
    assert services["prefect-server"]["image"] == f"prefecthq/prefect:{prefect_pin[1]}-python3.11"
    server_cmd = _command(services["prefect-server"]["command"])
    assert server_cmd[:3] == ["prefect", "server", "start"]
    assert server_cmd[server_cmd.index("--host") + 1] == "0.0.0.0"
    server_env = _environment(services["prefect-server"])
    assert server_env["PREFECT_SERVER_ANALYTICS_ENABLED"] == "false"


def test_compose_ragc_services_run_the_image_built_from_the_dockerfile() -> None:
    images = set()
    for name in RAGC_SERVICES:
        service = _services()[name]
        images.add(service["image"])
        build = service["build"]
        assert (COMPOSE.parent / build["context"]).resolve() == ROOT
        assert (ROOT / build["dockerfile"]).resolve() == DOCKERFILE
    assert len(images) == 1, f"the ragc services run different images: {images}"


def test_compose_healthchecks() -> None:
    services = _services()

    def test_of(name: str) -> str:
        check = services[name].get("healthcheck")
        assert check, f"{name} has no healthcheck"
        assert not check.get("disable"), f"{name}: healthcheck disabled"
        return " ".join(_command(check["test"]))

    assert "redis-cli ping" in test_of("redis")
    assert "pg_isready" in test_of("postgres")
    assert "/api/health" in test_of("prefect-server")
    assert "/health" in test_of("prefect-worker")
    assert "--with-healthcheck" in _command(services["prefect-worker"]["command"])
    for name in API_SERVICES:
        assert f"127.0.0.1:{SERVICE_PORT}/readyz" in test_of(name)
    assert "nginx-health" in test_of("proxy")
    assert "location = /nginx-health" in NGINX.read_text(encoding="utf-8")
    # The one-shot migration must not inherit the image's /healthz check of the service.
    assert services["migrate"]["healthcheck"] == {"disable": True}


def test_redis_runs_without_persistence_like_the_dev_server() -> None:
    command = _command(_services()["redis"]["command"])
    assert command[0] == "redis-server"
    assert command[command.index("--save") + 1] == ""
    assert command[command.index("--appendonly") + 1] == "no"
    assert "--maxmemory-policy" not in command  # an evicted key is a broken version


def test_compose_dependency_conditions() -> None:
    def conditions(name: str) -> dict[str, str]:
        depends = _services()[name].get("depends_on") or {}
        assert isinstance(depends, dict), f"{name}: depends_on needs conditions"
        return {dep: spec["condition"] for dep, spec in depends.items()}

    assert conditions("migrate") == {"postgres": "service_healthy"}
    assert _services()["migrate"]["restart"] == "no"
    for name in API_SERVICES:
        found = conditions(name)
        assert found["redis"] == "service_healthy"
        assert found["migrate"] == "service_completed_successfully"
    worker = conditions("prefect-worker")
    assert worker["prefect-server"] == "service_healthy"
    assert worker["migrate"] == "service_completed_successfully"
    assert set(conditions("proxy")) == set(API_SERVICES)
    for name, service in _services().items():
        for dep in service.get("depends_on") or {}:
            assert dep in _services(), f"{name} depends on an unknown service {dep}"


def test_compose_postgres_and_volumes() -> None:
    postgres = _services()["postgres"]
    env = _environment(postgres)
    assert {"POSTGRES_DB", "POSTGRES_USER", "POSTGRES_PASSWORD"} <= set(env)
    password = REFERENCE.fullmatch(env["POSTGRES_PASSWORD"])
    assert password, "POSTGRES_PASSWORD must be a ${...} reference"
    assert password["name"] == "POSTGRES_PASSWORD"
    assert password["op"] == ":?", "the Postgres password must be required, never defaulted"
    declared = set(_compose().get("volumes") or {})
    for name, service in _services().items():
        for volume in service.get("volumes") or []:
            source = str(volume).split(":", 1)[0]
            if source.startswith((".", "/")):
                assert (COMPOSE.parent / source).exists(), f"{name}: no {source}"
            else:
                assert source in declared, f"{name}: volume {source} is not declared"
    assert any(str(v).endswith("/var/lib/postgresql/data") for v in postgres["volumes"])


def test_compose_services_use_one_store_and_warm_tier() -> None:
    services = _services()
    postgres = _environment(services["postgres"])
    for name in (*API_SERVICES, "prefect-worker"):
        env = _environment(services[name])
        assert _resolve(env["RAGC_STORE"]) == "redis://redis:6379/0", name
    for name in (*API_SERVICES, "prefect-worker", "migrate"):
        dsn = urlsplit(_resolve(_environment(services[name])["RAGC_WARM_DSN"]))
        assert dsn.scheme == "postgresql", name
        assert dsn.hostname == "postgres"
        assert dsn.port == 5432
        assert dsn.username == _resolve(postgres["POSTGRES_USER"])
        assert dsn.password == "<POSTGRES_PASSWORD>"
        assert dsn.path.lstrip("/") == _resolve(postgres["POSTGRES_DB"])
    for name in (*API_SERVICES, "prefect-worker"):
        assert _environment(services[name])["PREFECT_API_URL"] == "http://prefect-server:4200/api"


def test_compose_proxy_balances_every_api_replica_on_the_service_port() -> None:
    proxy = _services()["proxy"]
    assert "./nginx.conf:/etc/nginx/nginx.conf:ro" in proxy["volumes"]
    conf = NGINX.read_text(encoding="utf-8")
    (listen,) = re.findall(r"^\s*listen\s+(\d+)\s*;", conf, re.M)
    assert f"{listen}:{listen}" in [str(port) for port in proxy["ports"]]
    assert listen == "8080"
    upstream = re.search(r"upstream\s+(\w+)\s*\{(.*?)\}", conf, re.S)
    assert upstream
    servers = re.findall(r"^\s*server\s+([\w.-]+):(\d+)", upstream[2], re.M)
    assert sorted(host for host, _ in servers) == sorted(API_SERVICES)
    assert {port for _, port in servers} == {str(SERVICE_PORT)}
    assert re.search(rf"proxy_pass\s+http://{upstream[1]}\s*;", conf)
    next_upstream = re.search(r"^\s*proxy_next_upstream\s+([^;]*);", conf, re.M)
    assert next_upstream
    assert "error" in next_upstream[1].split()
    assert re.search(r"proxy_set_header\s+X-Session-Id\s+\$http_x_session_id\s*;", conf)
    assert re.search(r"proxy_set_header\s+Authorization\s+\$http_authorization\s*;", conf)
    assert conf.count("{") == conf.count("}")


# --- environment variables agree with the code -----------------------------------------------


def test_the_scan_finds_the_variables_the_code_reads() -> None:
    found = _vars_the_code_reads()
    assert {"RAGC_STORE", "RAGC_ADMIN_TOKEN", "RAGC_WEBHOOK_SECRET", "RAGC_WARM_DSN"} <= found
    assert "RAGC_L3_BUDGET" in found


def test_every_ragc_variable_in_the_manifests_is_read_by_the_code() -> None:
    known = _vars_the_code_reads()
    unknown = {
        f"{where}: {name}"
        for where, names in _vars_the_manifests_set().items()
        for name in names
        if name.startswith("RAGC_") and name not in known
    }
    assert not unknown, f"set but read by nothing (renamed?): {sorted(unknown)}"


def test_every_service_setting_is_documented_in_the_deploy_readme() -> None:
    readme = (DEPLOY / "README.md").read_text(encoding="utf-8")
    service_vars = _settings_variables()
    assert {"RAGC_STORE", "RAGC_L3_BUDGET"} <= service_vars
    missing = sorted(name for name in service_vars if f"`{name}`" not in readme)
    assert not missing, f"deploy/README.md does not explain {missing}"


def test_k8s_configmap_holds_only_settings_and_the_service_reads_them() -> None:
    config = _k8s_one("ConfigMap")
    data = config["data"]
    assert {"RAGC_STORE", "RAGC_POINTER_POLL_S", "RAGC_PROVIDER", "RAGC_L3_BUDGET"} <= set(data)
    assert all(isinstance(value, str) for value in data.values()), "ConfigMap values are strings"
    assert not [key for key in data if SECRETISH.search(key)], "a secret in the ConfigMap"
    settings = ServeSettings.from_env({k: v for k, v in data.items() if k.startswith("RAGC_")})
    assert urlsplit(settings.store).scheme in {"redis", "rediss"}
    assert settings.provider in PROVIDERS


# --- commands use real CLI options -----------------------------------------------------------


def _ragc_commands() -> dict[str, list[str]]:
    """Every ``ragc ...`` command line of the image, compose and Kubernetes, by where."""
    found: dict[str, list[str]] = {"Dockerfile CMD": json.loads(_docker("CMD")[-1])}
    for name, service in _services().items():
        if "command" in service:
            found[f"compose:{name}"] = _command(service["command"])
    for workload in _k8s_workloads():
        for container in _containers(workload):
            found[f"k8s:{workload['metadata']['name']}/{container['name']}"] = _command(
                container.get("command", []) + container.get("args", [])
            )
    return {where: argv for where, argv in found.items() if argv and argv[0] == "ragc"}


def _split(argv: Sequence[str]) -> tuple[list[str], list[str]]:
    """(sub-command path, options) of a ``ragc`` command line."""
    path: list[str] = []
    for token in argv[1:]:
        if token.startswith("-"):
            break
        path.append(token)
    return path, [token for token in argv[1:] if token.startswith("--")]


def _click_command(path: Sequence[str]) -> Any:
    """The (typer-vendored) click command of ``ragc PATH``."""
    command: Any = typer.main.get_command(cli)
    for name in path:
        assert isinstance(command, TyperGroup), f"ragc {' '.join(path)}: not a command group"
        sub = command.commands.get(name)
        assert sub is not None, f"ragc has no command {' '.join(path)}"
        command = sub
    return command


def test_manifest_commands_use_real_cli_options() -> None:
    commands = _ragc_commands()
    used = {tuple(_split(argv)[0]) for argv in commands.values()}
    assert ("serve",) in used
    assert ("db", "upgrade") in used
    runner = CliRunner()
    for where, argv in commands.items():
        path, options = _split(argv)
        result = runner.invoke(cli, [*path, "--help"])
        assert result.exit_code == 0, f"{where}: `ragc {' '.join(path)} --help` failed"
        for option in options:
            assert option.split("=", 1)[0] in result.output, f"{where}: no option {option}"
        # And the values parse (types and ranges), without running anything.
        command = _click_command(path)
        context = command.make_context(" ".join(["ragc", *path]), list(argv[1 + len(path) :]))
        if path == ["serve"]:
            assert context.params["port"] == SERVICE_PORT, where
            assert context.params["host"] == "0.0.0.0", where


def test_db_upgrade_gets_its_dsn_from_the_variable_the_option_reads() -> None:
    (dsn,) = [p for p in _click_command(["db", "upgrade"]).params if p.name == "dsn"]
    assert dsn.envvar == "RAGC_WARM_DSN"
    assert "RAGC_WARM_DSN" in _environment(_services()["migrate"])
    job = _job()
    (container,) = _containers(job)
    assert _command(container["command"]) == ["ragc", "db", "upgrade"]
    refs = {src["secretRef"]["name"] for src in container["envFrom"] if "secretRef" in src}
    assert refs == {_k8s_one("Secret")["metadata"]["name"]}
    assert "RAGC_WARM_DSN" in _k8s_one("Secret")["stringData"]


def test_the_prefect_worker_polls_the_pool_of_prefect_yaml() -> None:
    prefect_yaml = yaml.safe_load((ROOT / "prefect.yaml").read_text(encoding="utf-8"))
    pools = {deployment["work_pool"]["name"] for deployment in prefect_yaml["deployments"]}
    assert len(pools) == 1
    workers = {"compose": _command(_services()["prefect-worker"]["command"])}
    (container,) = _containers(_worker_deployment())
    workers["k8s"] = _command(container["command"])
    for where, argv in workers.items():
        assert argv[:3] == ["prefect", "worker", "start"], where
        assert {argv[argv.index("--pool") + 1]} == pools, where
        assert argv[argv.index("--type") + 1] == "process", where


# --- ports and probe paths are real routes ---------------------------------------------------


@cache
def _routes() -> frozenset[str]:
    app = create_app(ServeSettings())  # routes only: the store opens in the lifespan, not here
    paths = set(app.route_handler_method_map)
    paths |= set(app.openapi_schema.paths or {})
    return frozenset(paths)


def test_probe_paths_are_routes_of_the_service() -> None:
    routes = _routes()
    assert {"/healthz", "/readyz"} <= routes
    probed: set[str] = set(re.findall(r"127\.0\.0\.1:\d+(/\w+)", _docker("HEALTHCHECK")[0]))
    for name in API_SERVICES:
        check = " ".join(_command(_services()[name]["healthcheck"]["test"]))
        probed |= set(re.findall(rf"127\.0\.0\.1:{SERVICE_PORT}(/\w+)", check))
    (container,) = _containers(_api_deployment())
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        if probe in container:
            probed.add(container[probe]["httpGet"]["path"])
    assert probed >= {"/healthz", "/readyz"}
    assert probed <= routes, f"probed paths the service does not serve: {probed - routes}"


def _port_number(container: Mapping[str, Any], port: int | str) -> int:
    if isinstance(port, int):
        return port
    (number,) = [p["containerPort"] for p in container["ports"] if p.get("name") == port]
    assert isinstance(number, int)
    return number


def test_k8s_api_deployment() -> None:
    deployment = _api_deployment()
    spec = deployment["spec"]
    assert spec["replicas"] == 2
    pod = spec["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    (container,) = _containers(deployment)
    argv = _command(container["command"])
    assert argv[:2] == ["ragc", "serve"]
    assert int(argv[argv.index("--port") + 1]) == SERVICE_PORT
    assert [p["containerPort"] for p in container["ports"]] == [SERVICE_PORT]
    readiness = container["readinessProbe"]["httpGet"]
    assert readiness["path"] == "/readyz"
    assert _port_number(container, readiness["port"]) == SERVICE_PORT
    liveness = container["livenessProbe"]["httpGet"]
    assert liveness["path"] == "/healthz"
    assert _port_number(container, liveness["port"]) == SERVICE_PORT
    resources = container["resources"]
    assert {"cpu", "memory"} <= set(resources["requests"])
    assert {"memory"} <= set(resources["limits"])
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    sources = container["envFrom"]
    assert {s["configMapRef"]["name"] for s in sources if "configMapRef" in s} == {
        _k8s_one("ConfigMap")["metadata"]["name"]
    }
    assert {s["secretRef"]["name"] for s in sources if "secretRef" in s} == {
        _k8s_one("Secret")["metadata"]["name"]
    }


def test_k8s_service_and_pdb_select_the_api_pods() -> None:
    pod_labels = _api_deployment()["spec"]["template"]["metadata"]["labels"]
    selector = _api_deployment()["spec"]["selector"]["matchLabels"]
    assert selector.items() <= pod_labels.items()
    service = _k8s_one("Service")
    assert service["spec"]["selector"].items() <= pod_labels.items()
    (port,) = service["spec"]["ports"]
    assert port["port"] == 80
    (container,) = _containers(_api_deployment())
    assert _port_number(container, port["targetPort"]) == SERVICE_PORT
    pdb = _k8s_one("PodDisruptionBudget")
    assert pdb["spec"]["minAvailable"] == 1
    assert pdb["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()


def test_k8s_worker_and_job() -> None:
    (container,) = _containers(_worker_deployment())
    config = _k8s_one("ConfigMap")
    (api_url,) = [item for item in container["env"] if item["name"] == "PREFECT_API_URL"]
    ref = api_url["valueFrom"]["configMapKeyRef"]
    assert ref["name"] == config["metadata"]["name"]
    assert ref["key"] in config["data"]
    assert config["data"][ref["key"]].endswith("/api")
    job = _job()
    assert isinstance(job["spec"]["backoffLimit"], int)
    assert job["spec"]["template"]["spec"]["restartPolicy"] in {"Never", "OnFailure"}
    images = {c["image"] for w in _k8s_workloads() for c in _containers(w)}
    assert len(images) == 1, f"the workloads run different images: {images}"
    for workload in _k8s_workloads():
        assert workload["spec"]["template"]["spec"]["securityContext"]["runAsNonRoot"] is True


# --- no literal secrets ----------------------------------------------------------------------


def _is_secret_reference(value: str) -> bool:
    """A whole ``${VAR}``, ``${VAR:?msg}`` or ``${VAR:-}`` (an empty default) reference."""
    match = REFERENCE.fullmatch(value)
    if not match:
        return False
    return not (match["op"] or "").endswith("-") or not match["arg"]


def test_compose_secrets_are_only_environment_references() -> None:
    for name, service in _services().items():
        for key, value in _environment(service).items():
            if not SECRETISH.search(key):
                continue
            where = f"compose {name}: {key}"
            if key.endswith("DSN"):
                password = urlsplit(_resolve(value)).password or ""
                # No password, or one that is a required (never defaulted) reference.
                assert not password or re.fullmatch(r"<\w+>", password), (
                    f"{where}: the DSN's password is not a required ${{...}} reference"
                )
            else:
                assert _is_secret_reference(value), f"{where}: {value!r} is not a ${{...}}"


def test_k8s_secrets_are_placeholders_or_secret_refs() -> None:
    secret = _k8s_one("Secret")
    values = {**(secret.get("stringData") or {}), **(secret.get("data") or {})}
    assert set(values) == {
        "RAGC_ADMIN_TOKEN",
        "RAGC_WEBHOOK_SECRET",
        "RAGC_WARM_DSN",
        "ANTHROPIC_API_KEY",
    }
    assert set(values.values()) == {PLACEHOLDER}
    assert "out of band" in (K8S / "secret.example.yaml").read_text(encoding="utf-8")
    for workload in _k8s_workloads():
        for container in _containers(workload):
            for item in container.get("env") or []:
                if SECRETISH.search(item["name"]):
                    assert "value" not in item, f"{item['name']}: a literal secret value"
                    assert "secretKeyRef" in item["valueFrom"]
    for docs in _k8s().values():
        for doc in docs:
            if doc["kind"] == "ConfigMap":
                assert not [k for k in doc.get("data") or {} if SECRETISH.search(k)]


def test_no_credentials_anywhere_in_deploy() -> None:
    leaked = re.compile(r"sk-ant-|-----BEGIN [A-Z ]*PRIVATE KEY-----|://[^/\s:@${}]+:[^@\s${}]+@")
    for path in DEPLOY.rglob("*"):
        if path.is_file():
            text = path.read_text(encoding="utf-8")
            hits = [m[0] for m in leaked.finditer(text) if "PASSWORD@" not in m[0]]
            assert not hits, f"{path.relative_to(ROOT)}: looks like a credential: {hits}"


@pytest.mark.parametrize("filename", sorted(K8S_KINDS))
def test_the_readme_names_each_k8s_file(filename: str) -> None:
    readme = (DEPLOY / "README.md").read_text(encoding="utf-8")
    assert filename in readme
