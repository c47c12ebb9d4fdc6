#!/usr/bin/env bash
# `promtool check rules` on the alert rules, and on every dashboard query (wrapped as recording
# rules), so that all of them parse as PromQL. Skipped (exit 77) where promtool (Debian package
# prometheus, large, so not in scripts/install-deps.sh) is missing; deploy_test checks the metric
# names in both files without it.
# Usage: check_promtool.sh SOURCE_DIR
set -euo pipefail
src=$1
command -v promtool >/dev/null || { echo "promtool not installed (apt-get install prometheus): skipped"; exit 77; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
promtool check rules "$src/deploy/monitoring/outbox-relay-alerts.yaml"
{
  echo "groups:"
  echo "  - name: dashboard-queries"
  echo "    rules:"
  n=0
  while IFS= read -r q; do
    n=$((n + 1))
    echo "      - record: dashboard_query_$n"
    echo "        expr: '${q//\'/\'\'}'"
  done < <(awk '/^```promql$/{q=1; next} /^```$/{q=0} q' "$src/deploy/monitoring/dashboard-queries.md")
} >"$work/queries.yaml"
promtool check rules "$work/queries.yaml"
