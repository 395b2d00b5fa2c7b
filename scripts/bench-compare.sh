#!/usr/bin/env bash
# Usage: scripts/bench-compare.sh REF BENCH COUNT
# Runs the benchmarks matching BENCH on REF (in a temporary worktree) and on
# the working tree, interleaved COUNT times, and prints benchstat's comparison.
set -euo pipefail
ref=${1:-main} bench=${2:-.} count=${3:-6}
top=$(git rev-parse --show-toplevel)
tmp=$(mktemp -d)
trap 'git -C "$top" worktree remove --force "$tmp/ref" >/dev/null 2>&1 || true; rm -rf "$tmp"' EXIT
git -C "$top" worktree add --detach "$tmp/ref" "$ref" >/dev/null
go install golang.org/x/perf/cmd/benchstat@latest
for i in $(seq "$count"); do
  (cd "$tmp/ref" && go test -run '^$' -bench "$bench" -benchmem -count 1 ./...) >>"$tmp/old.txt"
  (cd "$top" && go test -run '^$' -bench "$bench" -benchmem -count 1 ./...) >>"$tmp/new.txt"
done
"$(go env GOPATH)/bin/benchstat" "$tmp/old.txt" "$tmp/new.txt"
