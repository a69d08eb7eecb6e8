# shellcheck shell=bash
# Shared by the benchmark scripts (sourced, not run).

# stop_started stops every process whose pid is in the array `started`:
# SIGTERM to all, up to 5 s for each to go, then SIGKILL, and reaps them.
# shellcheck disable=SC2154  # started is the sourcing script's array
stop_started() {
  local p
  for p in "${started[@]}"; do
    kill -TERM "$p" 2>/dev/null || true
  done
  for p in "${started[@]}"; do
    for _ in $(seq 50); do
      kill -0 "$p" 2>/dev/null || break
      sleep 0.1
    done
    kill -KILL "$p" 2>/dev/null || true
    wait "$p" 2>/dev/null || true
  done
}
