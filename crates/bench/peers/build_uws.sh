#!/usr/bin/env bash
# Builds the µWebSockets echo server (peers/uws_echo.c) and pub/sub server (peers/uws_pubsub.c)
# for the benchmarks: downloads PyPI's socketify (which ships µWebSockets prebuilt as libsocketify, on libuv),
# takes its Linux x86_64 library, and compiles the echo against it. Needs a C compiler, pip
# and Debian's libuv1. Output: target/bench/uws/uws-echo (the runner picks it up when present).
set -euo pipefail
version=0.0.31
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../../.." && pwd)"
out="$root/target/bench/uws"
lib="$out/libsocketify_linux_amd64.so"
mkdir -p "$out"
if [ "$(uname -m)" != x86_64 ]; then
  echo "build_uws.sh: socketify ships µWebSockets for x86_64 Linux only" >&2
  exit 1
fi
if [ ! -f "$lib" ]; then
  work="$(mktemp -d)"
  trap 'rm -rf "$work"' EXIT
  python="$root/.venv/bin/python"   # scripts/test's virtualenv has pip; Debian's python3 may not
  [ -x "$python" ] || python=python3
  "$python" -m pip download -q --no-deps --no-binary :all: "socketify==$version" -d "$work"
  tar -xzf "$work/socketify-$version.tar.gz" -C "$work"
  cp "$work/socketify-$version/src/socketify/libsocketify_linux_amd64.so" "$lib"
fi
cc -O2 -Wall -Wextra -o "$out/uws-echo" "$root/crates/bench/peers/uws_echo.c" \
  -L"$out" -l:libsocketify_linux_amd64.so -Wl,-rpath,"$out" -lpthread
echo "built target/bench/uws/uws-echo (µWebSockets from socketify $version)"
# The pub/sub server of the fan-out benchmark (`fullduplex-bench fanout`), on the same library.
cc -O2 -Wall -Wextra -D_GNU_SOURCE -o "$out/uws-pubsub" "$root/crates/bench/peers/uws_pubsub.c" \
  -L"$out" -l:libsocketify_linux_amd64.so -Wl,-rpath,"$out" -lpthread
echo "built target/bench/uws/uws-pubsub"
