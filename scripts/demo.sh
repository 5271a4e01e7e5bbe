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

say "Versions in the store"
ragc versions

say "Roll back to the previous version, then forward again"
ragc rollback
ragc rollout "$(ragc versions --json | python3 -c 'import json,sys; print(json.load(sys.stdin)[-1]["version"])')"
