#!/usr/bin/env bash
# Smoke test in a real terminal: start `tunebench` inside tmux, press F2-F6, check that each panel's title is on
# screen, then quit with q. Exit 0 on success, 1 on failure, 77 when tmux is missing (a skip).
#
#   tests/tmux_smoke.sh                      # 80x24 with the `tunebench` on PATH
#   WIDTH=120 HEIGHT=40 TUNEBENCH="python -m tui.launch" tests/tmux_smoke.sh
set -euo pipefail

command -v tmux >/dev/null 2>&1 || { echo "tmux_smoke: tmux is not installed; skipping"; exit 77; }

ROOT=$(cd "$(dirname "$0")/.." && pwd)
TUNEBENCH=${TUNEBENCH:-tunebench}
WIDTH=${WIDTH:-80}
HEIGHT=${HEIGHT:-24}
TIMEOUT=${TIMEOUT:-60}
SESSION="tunebench-smoke-$$"

# A server of its own: the default one may be on its way out after another session's kill-session, and a
# new-session that reaches it fails with "server exited unexpectedly".
tmux() { command tmux -L "$SESSION" "$@"; }

tmux new-session -d -s "$SESSION" -x "$WIDTH" -y "$HEIGHT" \
    "cd '$ROOT' && $TUNEBENCH; echo \"tunebench exited with \$?\"; sleep 30"
trap 'tmux kill-server 2>/dev/null || true' EXIT

# Poll the screen until the text shows up (the terminal has no event to wait on), or give up after TIMEOUT s.
wait_for() {
    local text=$1 deadline=$((SECONDS + TIMEOUT))
    while ((SECONDS < deadline)); do
        if tmux capture-pane -p -t "$SESSION" | grep -qF -- "$text"; then
            return 0
        fi
        sleep 0.2
    done
    echo "tmux_smoke: never saw \"$text\" at ${WIDTH}x${HEIGHT}; the screen was:"
    tmux capture-pane -p -t "$SESSION"
    exit 1
}

wait_for "Data browser"
wait_for "rows"  # the dataset loaded in its worker
for step in "F3:Run config" "F4:Training" "F5:Prediction" "F6:Run history" "F2:Data browser"; do
    tmux send-keys -t "$SESSION" "${step%%:*}"
    wait_for "${step#*:}"
done
tmux send-keys -t "$SESSION" q
wait_for "tunebench exited with 0"
echo "tmux_smoke: every panel showed at ${WIDTH}x${HEIGHT}"
