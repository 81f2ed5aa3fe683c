#!/usr/bin/env bash
# prune-old-tags.sh REPOSITORY KEEP...: remove the tags of REPOSITORY created more than a day ago, except KEEP.
# Used by the image scripts to bound disk use; a younger tag may belong to another worktree's run, so it stays.
# Never fails the caller (an image still used by a container is simply kept).
set -uo pipefail
repo="$1"; shift
cutoff=$(( $(date +%s) - 86400 ))
docker images --format '{{.Repository}}:{{.Tag}}|{{.CreatedAt}}' "$repo" | while IFS='|' read -r ref created; do
  for keep in "$@"; do [ "$ref" = "$keep" ] && continue 2; done
  when="$(date -d "${created% *}" +%s 2>/dev/null || echo "$cutoff")"
  [ "$when" -lt "$cutoff" ] && docker rmi "$ref" >/dev/null 2>&1
done
exit 0
