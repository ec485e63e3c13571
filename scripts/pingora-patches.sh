#!/usr/bin/env bash
# The Pingora patch series Roost carries (doc/pingora-patches.md): third_party/pingora-<crate>/ is
# the published 0.9.1 crate, trimmed, plus third_party/patches/NNNN-*.patch applied in order.
#
#   scripts/pingora-patches.sh regenerate   rebuild every third_party/pingora-* tree from the
#                                           published .crate (cargo's download cache, else
#                                           crates.io; its sha256 is checked) and the series
#   scripts/pingora-patches.sh check        offline: the committed trees are exactly crate + series
#                                           (the series reversed out of them gives the pristine
#                                           files listed in third_party/patches/pristine.sha256)
#   scripts/pingora-patches.sh diff         what the trees hold beyond crate + series, as a patch
#                                           (to save as the next NNNN-name.patch)
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
TP=$ROOT/third_party
PATCHES=$TP/patches
VERSION=0.9.1
# crate -> sha256 of its .crate, as crates.io publishes it (the checksums of Cargo.lock before
# the [patch.crates-io] replaced them).
declare -A SHA256=(
    [pingora-core]=a535f47f65fdcb003f9e1df04cd18e614c128dfe9388acce3f211ae38ac14d68
    [pingora-proxy]=8e3d5670490740405ecc8c6f75c3fcbce4d24f7adaffb355ca44550e7918e358
)
CRATES=$(printf '%s\n' "${!SHA256[@]}" | sort)

die() { echo "pingora-patches: $*" >&2; exit 1; }

# The published crate, unpacked and trimmed into $2/<crate>: no benches, examples, lock file
# or packaging metadata (the [[bench]] and [[example]] targets go from Cargo.toml with them);
# src/ and everything Pingora's own unit tests read stay.
unpack() {
    local crate=$1 dest=$2 file
    file=$(ls "${CARGO_HOME:-$HOME/.cargo}"/registry/cache/*/"$crate-$VERSION.crate" 2>/dev/null | head -n1 || true)
    if [ -z "$file" ]; then
        file=$dest/$crate-$VERSION.crate
        curl -fsSL -o "$file" "https://static.crates.io/crates/$crate/$crate-$VERSION.crate"
    fi
    echo "${SHA256[$crate]}  $file" | sha256sum -c --quiet - || die "$file: checksum mismatch"
    tar -xzf "$file" -C "$dest"
    mv "$dest/$crate-$VERSION" "$dest/$crate"
    (
        cd "$dest/$crate"
        rm -rf benches examples Cargo.lock Cargo.toml.orig .cargo_vcs_info.json .cargo-ok
        # drop the [[bench]] / [[example]] tables (each runs up to the next blank line)
        awk '/^\[\[(bench|example)\]\]$/ {skip=1} skip && /^$/ {skip=0; next} !skip' \
            Cargo.toml >Cargo.toml.new
        mv Cargo.toml.new Cargo.toml
    )
}

# A scratch git repository holding the pristine trees, committed, then the series applied
# (strictly: git apply refuses any patch that does not apply exactly).
build_series() {
    local work=$1 p
    mkdir -p "$work"
    for c in $CRATES; do unpack "$c" "$work"; done
    rm -f "$work"/*.crate
    git -C "$work" init -q
    git -C "$work" add -A
    git -C "$work" -c user.name=p -c user.email=p@p commit -qm pristine
    (cd "$work" && find $CRATES -type f -print0 | sort -z | xargs -0 sha256sum) >"$work.sha256"
    for p in "$PATCHES"/[0-9][0-9][0-9][0-9]-*.patch; do
        [ -e "$p" ] || continue
        git -C "$work" apply --whitespace=nowarn "$p" || die "$(basename "$p") does not apply"
    done
    git -C "$work" add -A
    git -C "$work" -c user.name=p -c user.email=p@p commit -qm series --allow-empty
}

scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT

case "${1:-}" in
regenerate)
    build_series "$scratch/tree"
    for c in $CRATES; do
        rm -rf "${TP:?}/$c"
        cp -a "$scratch/tree/$c" "$TP/$c"
    done
    cp "$scratch/tree.sha256" "$PATCHES/pristine.sha256"
    echo "regenerated: $(echo $CRATES) (with $(ls "$PATCHES"/[0-9]*.patch 2>/dev/null | wc -l) patches)"
    ;;
check)
    # offline: copy the committed trees, take the series out in reverse order, compare with the
    # pristine file list
    mkdir -p "$scratch/tree"
    for c in $CRATES; do
        [ -d "$TP/$c" ] || die "third_party/$c missing (run: $0 regenerate)"
        cp -a "$TP/$c" "$scratch/tree/$c"
    done
    for p in $(ls -r "$PATCHES"/[0-9][0-9][0-9][0-9]-*.patch 2>/dev/null); do
        (cd "$scratch/tree" && git apply -R --whitespace=nowarn "$p") ||
            die "$(basename "$p") is not applied as is in third_party/ (run: $0 diff)"
    done
    (cd "$scratch/tree" && find $CRATES -type f -print0 | sort -z | xargs -0 sha256sum) >"$scratch/now.sha256"
    diff -u "$PATCHES/pristine.sha256" "$scratch/now.sha256" >&2 ||
        die "third_party/ differs from crate + patches (run: $0 diff)"
    # every manifest that builds Roost takes every patched crate from third_party/
    for manifest in Cargo.toml fuzz/Cargo.toml; do
        for c in $CRATES; do
            grep -Eq "^$c = \{ path = \"(\.\./)?third_party/$c\" \}" "$ROOT/$manifest" ||
                die "$manifest: no [patch.crates-io] line for $c (path third_party/$c)"
        done
    done
    echo "third_party: $(echo $CRATES) = $VERSION + $(ls "$PATCHES"/[0-9]*.patch 2>/dev/null | wc -l) patches"
    ;;
diff)
    build_series "$scratch/tree"
    for c in $CRATES; do
        rm -rf "${scratch:?}/tree/$c"
        cp -a "$TP/$c" "$scratch/tree/$c"
    done
    git -C "$scratch/tree" add -A
    git -C "$scratch/tree" diff --cached -- .
    ;;
*)
    sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'
    exit 2
    ;;
esac
