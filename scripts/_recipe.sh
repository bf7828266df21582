# Shared by the recipes in scripts/: `step CMD...` runs CMD, or only prints it when the recipe was
# called with --dry-run (every recipe shows the exact commands it would run).
DRY_RUN=0
for arg in "$@"; do [[ "$arg" == "--dry-run" ]] && DRY_RUN=1; done
step() {
  if [[ $DRY_RUN == 1 ]]; then printf '%q ' "$@"; printf '\n'; else "$@"; fi
}
