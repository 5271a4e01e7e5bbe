#!/usr/bin/env bash
# The main job on embedded defaults: compile the example knowledge, publish it, ask it questions.
# Run through `make demo` (which installs everything first). Uses ./.ragc/ for its state.
set -euo pipefail
cd "$(dirname "$0")/.."

export RAGC_STORE="${RAGC_STORE:-sqlite:///.ragc/knowledge.db}"

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

say "Compile examples (offline provider) and publish it"
ragc compile examples --publish

say "Compile again: unchanged knowledge, so every provider call comes from the build cache"
ragc compile examples --publish

say "Ask: a curated question, word for word (L1)"
ragc ask "What's your return window?"

say "Ask: a paraphrase the router recognises (L2)"
ragc ask "how long does the 500 wh battery take to charge from empty"

say "Ask: a question about a document section (compiled from help/account.html)"
ragc ask "Tell me about two-factor authentication"

say "Ask: something the knowledge does not cover (SAFE fallback)"
ragc ask "will it rain in lisbon tomorrow"

say "Ask: a question composed from a topic block (L3)"
ragc ask "how do i charge the battery in winter"

say "Serve it over HTTP and ask the running service"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
ragc serve --port "$port" &
server=$!
trap 'kill "$server" 2>/dev/null || true; wait "$server" 2>/dev/null || true' EXIT
python3 - "$port" <<'PY'
import json, sys, time, urllib.request
base = f"http://127.0.0.1:{sys.argv[1]}"
for _ in range(200):
    try:
        if urllib.request.urlopen(f"{base}/readyz", timeout=1).status == 200:
            break
    except OSError:
        time.sleep(0.1)
else:
    sys.exit("the service did not become ready")
for question in (
    "What's your return window?",
    "how long does the 500 wh battery take to charge from empty",
    "how do i charge the battery in winter",
    "will it rain in lisbon tomorrow",
):
    request = urllib.request.Request(
        f"{base}/v1/answer",
        data=json.dumps({"question": question}).encode(),
        headers={"content-type": "application/json"},
    )
    answer = json.load(urllib.request.urlopen(request, timeout=10))
    cited = ", ".join(f"{s['path']}#{s['anchor']}" for s in answer["sources"]) or "-"
    print(f"POST /v1/answer {question!r}\n  -> {answer['layer']} {answer['entry_id'] or ''} "
          f"({answer['latency_ms']} ms, {answer['version']}) cites {cited}\n  {answer['answer'][:120]}")
PY
kill "$server"; wait "$server" 2>/dev/null || true
trap - EXIT

say "Misses logged by the service (the next compile folds them in)"
ragc misses

say "Versions in the store"
ragc versions

say "Roll back to the previous version, then forward again"
ragc rollback
ragc rollout "$(ragc versions --json | python3 -c 'import json,sys; print(json.load(sys.stdin)[-1]["version"])')"
