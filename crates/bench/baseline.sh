#!/usr/bin/env bash
# Builds the fullduplex echo server of this benchmark against the library as it was at COMMIT,
# for before/after comparisons in one run:
#
#   crates/bench/baseline.sh 70d301f
#   cargo run --release -p fullduplex-bench -- --server fullduplex-before=target/bench/baseline/echo-fullduplex-70d301f
#
# The tree at COMMIT is exported (git archive) to a temporary directory, this checkout's
# crates/bench and Cargo.lock are copied in, and the echo server is built there with its own
# target directory (target/bench/baseline-target). Nothing in this checkout changes but
# target/bench/.
set -euo pipefail
commit="${1:?usage: crates/bench/baseline.sh COMMIT}"
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
short="$(git -C "$root" rev-parse --short "$commit")"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
git -C "$root" archive "$commit" | tar -x -C "$work"
rm -rf "$work/crates/bench"
cp -r "$root/crates/bench" "$work/crates/bench"
cp "$root/Cargo.lock" "$work/Cargo.lock"
if ! grep -q '"crates/bench"' "$work/Cargo.toml"; then
  sed -i 's|^members = \[\(.*\)\]|members = [\1, "crates/bench"]|' "$work/Cargo.toml"
fi
CARGO_TARGET_DIR="$root/target/bench/baseline-target" \
  cargo build --release --manifest-path "$work/Cargo.toml" -p fullduplex-bench --bin echo-fullduplex
mkdir -p "$root/target/bench/baseline"
cp "$root/target/bench/baseline-target/release/echo-fullduplex" \
  "$root/target/bench/baseline/echo-fullduplex-$short"
echo "built target/bench/baseline/echo-fullduplex-$short"
