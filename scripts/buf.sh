#!/usr/bin/env bash
# Runs the buf CLI (from the buf-bin wheel) on our protos, in the workspace buf.yaml
# describes. protos/ imports google/rpc/status.proto, which is not ours: it comes from
# the googleapis-common-protos wheel (a dependency of the server), linked here into
# .build/googleapis as a second module; nothing of googleapis is committed.
#
#   scripts/buf.sh lint                 buf lint
#   scripts/buf.sh breaking             buf breaking against the last released contract:
#                                       the newest tag v* that HEAD contains, else the
#                                       merge base of HEAD and main (BUF_AGAINST=<git ref>
#                                       picks another)
#   scripts/buf.sh descriptor OUT       a self-contained FileDescriptorSet of the contract
#                                       and everything it imports, with comments
#   scripts/buf.sh <verb> ...           any other buf command, in the same workspace
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-.venv/bin/python}
buf="$(dirname "$python")/buf"

# Where the wheel's google/rpc/*.proto live (site-packages).
googleapis_site() {
    "$python" -c 'import google.rpc.status_pb2 as s, pathlib; print(pathlib.Path(s.__file__).resolve().parents[2])'
}

# Make <root>/.build/googleapis/google/rpc hold links to the wheel's google/rpc sources.
link_googleapis() {
    local root=$1 site
    site=$(googleapis_site)
    rm -rf "$root/.build/googleapis" && mkdir -p "$root/.build/googleapis/google/rpc"
    ln -s "$site"/google/rpc/*.proto "$root/.build/googleapis/google/rpc/"
}

# The git commit to compare against: BUF_AGAINST, else the newest release tag HEAD
# contains, else where HEAD left main. On main itself that is HEAD: nothing to compare.
against_commit() {
    if [[ -n ${BUF_AGAINST:-} ]]; then
        echo "buf.sh: breaking against $BUF_AGAINST" >&2
        git rev-parse --verify --quiet "$BUF_AGAINST^{commit}" \
            || { echo "buf.sh: BUF_AGAINST=$BUF_AGAINST is not a commit" >&2; return 1; }
        return
    fi
    local tag main
    if tag=$(git describe --tags --abbrev=0 --match 'v[0-9]*' HEAD 2>/dev/null); then
        echo "buf.sh: breaking against the release $tag" >&2
        git rev-parse "$tag^{commit}"
        return
    fi
    for main in main origin/main; do
        if git rev-parse --verify --quiet "$main^{commit}" >/dev/null; then
            if git merge-base HEAD "$main"; then
                echo "buf.sh: breaking against the merge base of HEAD and $main" >&2
                return
            fi
            echo "buf.sh: HEAD and $main share no history here (a shallow clone?):" \
                "fetch more of it, or set BUF_AGAINST" >&2
            return 1
        fi
    done
    echo "buf.sh: no release tag and no main branch: set BUF_AGAINST=<git ref>" >&2
    return 1
}

# buf breaking: the working tree's contract against that commit's. The commit's protos/
# and buf.yaml are extracted into .build/against with its own googleapis links, so the
# old contract builds exactly as it did then.
breaking() {
    local commit against=.build/against
    commit=$(against_commit)
    rm -rf "$against" && mkdir -p "$against"
    git archive "$commit" -- buf.yaml protos | tar -x -C "$against"
    link_googleapis "$against"
    "$buf" breaking --against "$against" "$@"
}

link_googleapis .
case ${1:-} in
    breaking) shift && breaking "$@" ;;
    descriptor)
        [[ $# -eq 2 ]] || { echo "usage: scripts/buf.sh descriptor OUT" >&2; exit 2; }
        mkdir -p "$(dirname "$2")"
        exec "$buf" build --as-file-descriptor-set -o "$2" ;;
    *) exec "$buf" "$@" ;;
esac
