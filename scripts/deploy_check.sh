#!/usr/bin/env bash
# Check prefect.yaml end to end against a throwaway, fully local Prefect server:
#
#   1. start `prefect server start` (no UI, analytics off, the scheduler on, looping every 5 s)
#      on a free 127.0.0.1 port, with a temporary PREFECT_HOME (its own SQLite database and
#      profiles) and PREFECT_API_URL pointing at it; wait for /api/health;
#   2. create the process work pool `ragc-process`; run `prefect --no-prompt deploy --all` with
#      the Prefect variables ragc_anthropic_api_key / ragc_store absent, then set them (to a fake
#      key) and deploy again; after each deploy check the three deployments, their crons, the pull
#      step, the `env` job variables and the one trigger automation on the server;
#   3. run `collect-versions/daily` on a scratch store through a `--run-once` process worker and
#      check the flow run reached COMPLETED;
#   3b. wait for the scheduler to create the cron runs of `compile-knowledge/weekly` (auto-
#      scheduled, each at a Sunday 03:00 UTC), move the first one's start to now, run it through
#      a `--run-once` worker and check it COMPLETED and published a version to the store;
#   3c. run the weekly compile on a copy of the examples with a regression suite it cannot pass:
#      the run must end FAILED, its one failed task `gate-regression`, with the `compile-gates`
#      artifact on the run;
#   4. emit a burst of three `ragc.knowledge.changed` events for `deploy-check-PID` (a git
#      repository declared in a RAGC_SOURCES file) and check the trigger created exactly one
#      `recompile-knowledge/on-change` run — scheduled 60 s ahead — whose `params.changed` is the
#      payload of one event of the burst (the one that fired the trigger) and whose knowledge is
#      that name; move it to now, run it through a worker, and check it pulled the repository
#      and published a new active version.
#
# Everything is bounded by `timeout`; the server and the worker are killed (by process group) on
# every exit, and the temporary folder is removed. Exit status: 0 on success; 3 when the Prefect
# server cannot start (an environment problem: no .venv, no free port, sandbox); 1 on any other
# failure, with a line on stderr naming the step (and the tail of the server and worker logs).
# Takes about two minutes (the weekly run compiles the examples).
#
# Usage: bash scripts/deploy_check.sh        (from anywhere; needs .venv — run `make install`)
# Environment: DEPLOY_CHECK_KEEP=1 keeps the temporary folder (logs, databases) for inspection;
#              DEPLOY_CHECK_STARTUP_TIMEOUT (seconds, default 120) bounds the server start;
#              DEPLOY_CHECK_PYTHON (default .venv/bin/python) is the environment's interpreter,
#              with `prefect` beside it.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$(pwd -P)"

PYTHON="${DEPLOY_CHECK_PYTHON:-$ROOT/.venv/bin/python}"
PREFECT="$(dirname "$PYTHON")/prefect"
STARTUP_TIMEOUT="${DEPLOY_CHECK_STARTUP_TIMEOUT:-120}"
ENV_FAILURE=3

# Messages go to fd 3, a copy of the original stderr: a trap can run while a command's output is
# redirected to a log file.
exec 3>&2
STARTED=$SECONDS
say() { printf '[deploy-check %3ds] %s\n' "$((SECONDS - STARTED))" "$*"; }
fail() {
    printf 'deploy-check: FAILED: %s\n' "$*" >&3
    exit 1
}
env_fail() {
    printf 'deploy-check: ENVIRONMENT: %s\n' "$*" >&3
    exit "$ENV_FAILURE"
}

[[ -x "$PREFECT" && -x "$PYTHON" ]] || env_fail "no $PREFECT; run 'make install' first"
command -v timeout >/dev/null || env_fail "coreutils 'timeout' is not installed"
command -v setsid >/dev/null || env_fail "util-linux 'setsid' is not installed"

WORK="$(mktemp -d "${TMPDIR:-/tmp}/ragc-deploy-check.XXXXXX")"
KB_NAME="deploy-check-$$"   # the knowledge source step 4 declares
SERVER_PID=""
CHILD_PID=""

# Kill a process group: the server's (started with setsid) or a bounded command's (`timeout`
# runs in a group of its own); in both the leader's pid is the group id.
stop_group() {
    local pid="$1"
    [[ -n "$pid" ]] || return 0
    kill -TERM -- "-$pid" 2>/dev/null || return 0
    for _ in $(seq 1 50); do
        kill -0 -- "-$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL -- "-$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}

teardown() {
    local status=$?
    trap - EXIT INT TERM
    stop_group "$CHILD_PID"
    stop_group "$SERVER_PID"
    rm -rf "$ROOT/.ragc/build/sources/$KB_NAME"
    if [[ $status -ne 0 ]]; then
        for log in server worker; do
            if [[ -s "$WORK/$log.log" ]]; then
                printf '\n--- last lines of the %s log ---\n' "$log" >&3
                tail -n 40 "$WORK/$log.log" >&3
            fi
        done
    fi
    if [[ "${DEPLOY_CHECK_KEEP:-0}" == 1 ]]; then
        printf 'deploy-check: kept %s\n' "$WORK" >&3
    else
        rm -rf "$WORK"
    fi
    exit "$status"
}
trap teardown EXIT
trap 'printf "deploy-check: interrupted\n" >&3; exit 130' INT
trap 'printf "deploy-check: terminated\n" >&3; exit 143' TERM

# Run "$@" for at most $1 seconds. It runs in the background so that a signal interrupts the
# wait at once (bash runs traps only between foreground commands) and teardown can kill it.
bounded() {
    local seconds="$1" status=0
    shift
    timeout --kill-after=10 "$seconds" "$@" <&0 3>&- &
    CHILD_PID=$!
    wait "$CHILD_PID" || status=$?
    CHILD_PID=""
    return "$status"
}

# A Prefect that is fully local, quiet and knows nothing of the developer's settings or profiles.
while read -r name; do unset "$name"; done < <(compgen -e | grep '^PREFECT_' || true)
export PREFECT_HOME="$WORK/home"
export PREFECT_PROFILES_PATH="$PREFECT_HOME/profiles.toml"
export PREFECT_SERVER_ANALYTICS_ENABLED=false
export DO_NOT_TRACK=1
export PREFECT_LOGGING_LEVEL=WARNING
export PREFECT_CLI_WRAP_LINES=false
export UNSTRUCTURED_DISABLE_NOTICE=1 TQDM_DISABLE=1 GX_ANALYTICS_ENABLED=false
mkdir -p "$PREFECT_HOME"

PORT="$("$PYTHON" -c 'import socket
s = socket.socket()
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])
s.close()')" || env_fail "could not find a free port on 127.0.0.1"
export PREFECT_API_URL="http://127.0.0.1:$PORT/api"

# --- 1. server ------------------------------------------------------------------------------
# The scheduler runs as it does for users (it creates the cron runs ahead of time; a worker only
# starts runs that are due), looping every 5 s instead of 60 so that step 3b need not wait long.
say "starting a Prefect server at $PREFECT_API_URL (PREFECT_HOME=$PREFECT_HOME)"
PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS=5 \
    setsid "$PREFECT" server start --host 127.0.0.1 --port "$PORT" --no-ui \
    --analytics-off --no-background >"$WORK/server.log" 2>&1 </dev/null 3>&- &
SERVER_PID=$!

deadline=$((SECONDS + STARTUP_TIMEOUT))
until "$PYTHON" - "$PREFECT_API_URL/health" <<'EOF' 2>/dev/null; do
import sys, urllib.request
with urllib.request.urlopen(sys.argv[1], timeout=2) as response:
    sys.exit(0 if response.status == 200 else 1)
EOF
    kill -0 "$SERVER_PID" 2>/dev/null ||
        env_fail "the Prefect server exited during startup (see its log below)"
    ((SECONDS < deadline)) ||
        env_fail "the Prefect server was not healthy within ${STARTUP_TIMEOUT}s"
    sleep 0.5
done
say "server healthy"

# --- 2. work pool and deployments ----------------------------------------------------------
bounded 60 "$PREFECT" work-pool create ragc-process --type process --overwrite \
    >"$WORK/pool.log" 2>&1 ||
    { cat "$WORK/pool.log" >&2; fail "could not create the work pool ragc-process"; }
say "work pool ragc-process created"

# Deploy twice: first with the Prefect variables that feed the secrets absent, then present.
FAKE_KEY="sk-ant-deploy-check-$RANDOM$RANDOM"   # not a key; proves where the value ends up
STORE="sqlite:///$WORK/k.db"

deploy_all() {
    bounded 240 "$PREFECT" --no-prompt deploy --all >"$WORK/deploy.log" 2>&1 ||
        { cat "$WORK/deploy.log" >&2; fail "'prefect --no-prompt deploy --all' failed ($1)"; }
    say "deploy --all ($1): $(grep -c 'successfully created' "$WORK/deploy.log") deployment(s)"
}

# What the server holds: three deployments on the pool, their crons, the pull step, the env
# job variables (resolved from the Prefect variables at deploy time) and one trigger automation.
check_server() {
    local failed="the deployments on the server are not as prefect.yaml says"
    bounded 60 "$PYTHON" - "$ROOT" "$@" <<'EOF' || fail "$failed"
import asyncio
import sys

from prefect.client.orchestration import get_client

ROOT, KEY, STORE = sys.argv[1:4]
EXPECTED = {
    "compile-knowledge/weekly": "0 3 * * 0",
    "recompile-knowledge/on-change": None,
    "collect-versions/daily": "30 4 * * *",
}


async def main() -> None:
    async with get_client() as client:
        for name, cron in EXPECTED.items():
            deployment = await client.read_deployment_by_name(name)
            assert deployment.work_pool_name == "ragc-process", (name, deployment.work_pool_name)
            crons = [getattr(s.schedule, "cron", None) for s in deployment.schedules]
            assert crons == ([cron] if cron else []), (name, crons)
            steps = deployment.pull_steps or []
            directory = steps[0]["prefect.deployments.steps.set_working_directory"]["directory"]
            assert directory == ROOT, (name, directory)
            env = (deployment.job_variables or {}).get("env", {})
            assert env == {"ANTHROPIC_API_KEY": KEY, "RAGC_STORE": STORE}, (name, env)
        automations = await client.read_automations()
        assert len(automations) == 1, [a.name for a in automations]
        trigger = automations[0].trigger
        assert trigger.expect == {"ragc.knowledge.changed"}, trigger
        assert trigger.within.total_seconds() == 60, trigger


asyncio.run(main())
EOF
}

deploy_all "variables absent"
check_server "" ""
for variable in "ragc_anthropic_api_key=$FAKE_KEY" "ragc_store=$STORE"; do
    bounded 60 "$PREFECT" variable set "${variable%%=*}" "${variable#*=}" >/dev/null ||
        fail "could not set the Prefect variable ${variable%%=*}"
done
deploy_all "variables present"
check_server "$FAKE_KEY" "$STORE"
say "deployments, schedules, pull step, env and the trigger automation are in place"

# --- 3. run the GC deployment through a process worker ---------------------------------------
bounded 60 "$PREFECT" deployment run collect-versions/daily \
    --param "store=$STORE" --param keep=3 >"$WORK/run.log" 2>&1 ||
    { cat "$WORK/run.log" >&2; fail "'prefect deployment run collect-versions/daily' failed"; }
UUID='[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}'
RUN_ID="$(grep -oE "$UUID" "$WORK/run.log" | tail -n 1 || true)"
[[ -n "$RUN_ID" ]] ||
    { cat "$WORK/run.log" >&2; fail "no flow run id in the output of 'deployment run'"; }
say "flow run $RUN_ID created; starting a --run-once worker"

run_failed() {
    bounded 60 "$PREFECT" flow-run logs "$RUN_ID" >&2 </dev/null || true
    fail "$1"
}
# One polling pass of a process worker, bounded by $1 seconds: it starts the runs that are due.
# The worker (and the flow run it starts) logs at INFO, for its log and `prefect flow-run logs`.
run_worker_once() {
    local seconds="$1" status=0
    bounded "$seconds" env PREFECT_LOGGING_LEVEL=INFO "$PREFECT" worker start \
        --pool ragc-process --type process --run-once >"$WORK/worker.log" 2>&1 </dev/null ||
        status=$?
    [[ $status -ne 124 ]] || run_failed "the worker did not finish within ${seconds}s"
    [[ $status -eq 0 ]] || run_failed "the worker exited with status $status"
}
# Flow run $1 COMPLETED; with a store URL as $2, that store has an active version too.
check_completed() {
    bounded 60 "$PYTHON" - "$@" <<'EOF' || run_failed "$failed"
import asyncio
import sys

from prefect.client.orchestration import get_client

from stores import open_store


async def main() -> None:
    async with get_client() as client:
        run = await client.read_flow_run(sys.argv[1])
        state = run.state
        print(f"flow run {run.name}: {state.type.value if state else None}"
              f" {state.message if state and state.message else ''}".rstrip())
        assert state is not None and state.is_completed(), state
    if len(sys.argv) > 2:
        store = open_store(sys.argv[2])
        assert store.active_version() is not None, "nothing published to the store"


asyncio.run(main())
EOF
}
# Flow run $1, scheduled for later, made due now (the next worker pass starts it).
due_now() {
    bounded 60 "$PYTHON" - "$1" <<'EOF' || fail "could not move flow run $1 to now"
import asyncio
import sys
from datetime import datetime, timezone

from prefect.client.orchestration import get_client
from prefect.states import Scheduled


async def main() -> None:
    async with get_client() as client:
        now = Scheduled(scheduled_time=datetime.now(timezone.utc))
        result = await client.set_flow_run_state(sys.argv[1], now, force=True)
        assert result.state is not None and result.state.is_scheduled(), result


asyncio.run(main())
EOF
}
run_worker_once 240
failed="flow run $RUN_ID of collect-versions/daily did not complete"
check_completed "$RUN_ID"
say "collect-versions/daily completed through the ragc-process worker"

# --- 3b. a run the scheduler created, of the weekly compile ------------------------------------
failed="the scheduler did not create the weekly compile's cron runs"
RUN_ID="$(bounded 120 "$PYTHON" - <<'EOF'
import asyncio
import sys
import time
from datetime import timezone

from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterName
from prefect.client.schemas.sorting import FlowRunSort


async def main() -> None:
    async with get_client() as client:
        weekly = DeploymentFilter(name=DeploymentFilterName(any_=["weekly"]))
        deadline = time.monotonic() + 90
        runs = []
        while time.monotonic() < deadline and not runs:
            runs = await client.read_flow_runs(
                deployment_filter=weekly, sort=FlowRunSort.EXPECTED_START_TIME_ASC
            )
            if not runs:
                await asyncio.sleep(1)
        assert runs, "no run of compile-knowledge/weekly within 90s: is the scheduler failing?"
        for run in runs:
            start = run.expected_start_time
            assert run.auto_scheduled, (run.name, "not created by the scheduler")
            assert run.state is not None and run.state.is_scheduled(), (run.name, run.state)
            when = start.astimezone(timezone.utc) if start else None
            assert when and (when.weekday(), when.hour, when.minute) == (6, 3, 0), (run.name, when)
        first = runs[0]
        print(f"scheduler created {len(runs)} weekly run(s); first {first.name} at "
              f"{first.expected_start_time}", file=sys.stderr)
        print(first.id)


asyncio.run(main())
EOF
)" || fail "$failed"
[[ -n "$RUN_ID" ]] || fail "$failed"
due_now "$RUN_ID"  # instead of next Sunday: the same run, still the scheduler's
say "the scheduler's first weekly run $RUN_ID moved to now; starting a --run-once worker"

run_worker_once 600
failed="the scheduled weekly run $RUN_ID did not complete and publish"
check_completed "$RUN_ID" "$STORE"
say "compile-knowledge/weekly: a run the scheduler created completed and published"

# --- 3c. a compile whose gate fails -------------------------------------------------------------
# The examples with a regression suite no snapshot can pass: the run must end Failed, with the
# failed task the gate, the gates artifact on the run, and no version published by it.
BAD="$WORK/bad-knowledge"
cp -r "$ROOT/examples" "$BAD"
"$PYTHON" - "$BAD/regression.jsonl" <<'EOF' || fail "could not write the failing regression suite"
import json
import sys

with open(sys.argv[1], "w", encoding="utf-8") as out:
    for i in range(5):
        case = {"query": f"what is the airspeed of swallow {i}", "accept": [{"entry_id": "refund.window"}]}
        out.write(json.dumps(case) + "\n")
EOF
PARAMS="{\"params\": {\"knowledge\": \"$BAD\", \"publish\": true, \"build_dir\": \"$WORK/bad-build\"}}"
bounded 60 "$PREFECT" deployment run compile-knowledge/weekly --params "$PARAMS" \
    >"$WORK/run.log" 2>&1 ||
    { cat "$WORK/run.log" >&2; fail "'prefect deployment run compile-knowledge/weekly' failed"; }
RUN_ID="$(grep -oE "$UUID" "$WORK/run.log" | tail -n 1 || true)"
[[ -n "$RUN_ID" ]] || { cat "$WORK/run.log" >&2; fail "no flow run id for the failing compile"; }
say "compile run $RUN_ID with a failing regression gate created; starting a --run-once worker"
run_worker_once 600
failed="the compile with a failing gate did not end as a Failed run failed by its gate"
bounded 60 "$PYTHON" - "$RUN_ID" <<'EOF' || run_failed "$failed"
import asyncio
import sys

from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterKey,
    FlowRunFilter,
    FlowRunFilterId,
)


async def main() -> None:
    async with get_client() as client:
        run = await client.read_flow_run(sys.argv[1])
        assert run.state is not None and run.state.is_failed(), run.state
        print(f"flow run {run.name}: {run.state.type.value} {run.state.message}")
        this_run = FlowRunFilter(id=FlowRunFilterId(any_=[run.id]))
        tasks = await client.read_task_runs(flow_run_filter=this_run)
        failed = [t.name for t in tasks if t.state is not None and t.state.is_failed()]
        assert failed == ["gate-regression"], failed
        artifacts = await client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["compile-gates"])),
            flow_run_filter=this_run,
        )
        assert len(artifacts) == 1, artifacts
        table = str(artifacts[0].data)
        assert "| regression | **FAIL** |" in table, table
        assert "what is the airspeed of swallow 0" in table, table


asyncio.run(main())
EOF
say "a failing gate: Failed run, failed task gate-regression, the compile-gates artifact"

# --- 4. the recompile trigger -----------------------------------------------------------------
# The events name a knowledge source (deploy-check-PID): a git repository (a copy of the
# examples) declared in a sources file the worker reads, as a worker whose image lacks the
# documents would pull them. Its checkout, in the project's build folder, goes at exit.
HANDBOOK="$WORK/handbook"
cp -r "$ROOT/examples" "$HANDBOOK"
for step in "init --quiet" "add ." "commit --quiet -m handbook"; do
    # shellcheck disable=SC2086  # the steps are words
    git -C "$HANDBOOK" -c user.email=check@example.com -c user.name=deploy-check $step ||
        env_fail "git cannot make the handbook repository"
done
printf '[knowledge.%s]\ngit = "%s"\n' "$KB_NAME" "$HANDBOOK" >"$WORK/sources.toml"
export RAGC_SOURCES="$WORK/sources.toml"

failed="the ragc.knowledge.changed trigger did not behave as configured"
RUN_ID="$(bounded 120 "$PYTHON" - "$KB_NAME" <<'EOF'
import asyncio
import sys
import time
from datetime import timedelta

from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterName
from prefect.events import emit_event

BURST = [["faq.jsonl"], ["help/account.html"], ["policies/returns.md"]]
NAME = sys.argv[1]


async def runs(client):
    return await client.read_flow_runs(
        deployment_filter=DeploymentFilter(name=DeploymentFilterName(any_=["on-change"]))
    )


async def main() -> None:
    for changed in BURST:
        event = emit_event(
            event="ragc.knowledge.changed",
            resource={"prefect.resource.id": f"ragc.knowledge.{NAME}"},
            payload={"changed": changed},
        )
        assert event is not None
    async with get_client() as client:
        deadline = time.monotonic() + 60
        found = []
        while time.monotonic() < deadline and not found:
            await asyncio.sleep(1)
            found = await runs(client)
        assert found, "no recompile run within 60s of the events"
        await asyncio.sleep(5)  # let the rest of the burst reach the trigger
        found = await runs(client)
        assert len(found) == 1, f"{len(found)} runs for one burst: {[r.name for r in found]}"
        run = found[0]
        params = run.parameters["params"]
        print(f"recompile run {run.name}: params={params} state={run.state_type.value}",
              file=sys.stderr)
        assert params["changed"] in BURST, params  # whichever event the trigger saw first
        assert params["knowledge"] == NAME and params["publish"] is True, params
        assert run.state is not None and run.state.is_scheduled(), run.state
        delay = run.expected_start_time - run.created
        assert timedelta(seconds=50) < delay <= timedelta(seconds=70), delay
        print(run.id)


asyncio.run(main())
EOF
)" || fail "$failed"
[[ -n "$RUN_ID" ]] || fail "$failed"
say "a burst of 3 ragc.knowledge.changed events created 1 recompile run, scheduled 60s ahead"
due_now "$RUN_ID"  # rather than in a minute: the debounce is checked, the run is the same

BEFORE="$("$PYTHON" -c 'import sys; from stores import open_store
print(open_store(sys.argv[1]).active_version())' "$STORE")" || fail "could not read the store"
run_worker_once 600
failed="the recompile run $RUN_ID of $KB_NAME did not complete and publish"
check_completed "$RUN_ID" "$STORE"
AFTER="$("$PYTHON" -c 'import sys; from stores import open_store
print(open_store(sys.argv[1]).active_version())' "$STORE")" || fail "could not read the store"
[[ "$AFTER" != "$BEFORE" ]] || run_failed "the recompile published nothing (active still $BEFORE)"
say "the recompile pulled $KB_NAME from its git repository and published $AFTER (was $BEFORE)"

say "OK: deploy --all, the GC run, a scheduled weekly compile, a failing gate and the recompile trigger all work"
