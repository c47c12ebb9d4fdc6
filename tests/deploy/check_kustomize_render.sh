#!/usr/bin/env bash
# Renders every kustomization under deploy/kubernetes with `kubectl kustomize` (offline: no
# cluster needed) and checks that each generated ConfigMap, whose name gains a content hash, is
# still the one its pods mount. Skipped (exit 77) where kubectl is not installed: deploy_test
# checks the same files structurally without it.
# Usage: check_kustomize_render.sh SOURCE_DIR
set -euo pipefail
src=$1
command -v kubectl >/dev/null || { echo "kubectl not installed: skipped"; exit 77; }
fail=0
for k in $(find "$src/deploy/kubernetes" -name kustomization.yaml | sort); do
  dir=$(dirname "$k")
  if ! out=$(kubectl kustomize "$dir" 2>&1); then
    echo "FAIL: kubectl kustomize ${dir#$src/}:"; echo "$out"; fail=1; continue
  fi
  kinds=$(grep '^kind: ' <<<"$out" | sed 's/kind: //' | sort | uniq -c | awk '{printf "%s %s, ", $1, $2}')
  echo "ok: ${dir#$src/} renders ${kinds%, }"
  # Generated ConfigMaps: "name: <name>-<10-char hash>" right under a ConfigMap's metadata.
  for cm in $(awk '/^kind: ConfigMap/{c=1} /^---/{c=0} c && /^  name: /{print $2}' <<<"$out" | grep -E -- '-[a-z0-9]{10}$' || true); do
    if grep -q "name: $cm\$" <<<"$(grep -v "^  name: $cm\$" <<<"$out")"; then
      echo "ok:   generated ConfigMap $cm is mounted"
    else
      echo "FAIL: generated ConfigMap $cm is referenced by no pod"; fail=1
    fi
  done
done
((fail == 0)) && echo "kustomize: every kustomization renders"
exit "$fail"
