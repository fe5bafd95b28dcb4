#!/usr/bin/env python3
"""Interop tests: fullduplex against Python `websockets` and Node `ws` (see interop/README.md).

  1. start our echo_server; run py_client.py and node_client.mjs against it;
  2. start py_server.py, then node_server.mjs; run our interop_client against each, check its
     exit code and that the peer printed `CLOSE 4000 bye`.

Every process is started and stopped by PID, every step is time-bounded, loopback only.
Run with the venv python (it is also used for the Python peers):
  .venv/bin/python interop/run.py
  .venv/bin/python interop/run.py --no-build
  .venv/bin/python interop/run.py --echo-server-cmd 'python3 /tmp/echo.py {addr}' \
      --interop-client-cmd 'python3 /tmp/client.py {url}'
Exit 0 when every step passed.
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HERE = ROOT / "interop"
STEP_TIMEOUT = 120.0
START_TIMEOUT = 20.0


def log(msg: str) -> None:
    print(f"[interop] {msg}", flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def stop(proc: subprocess.Popen, name: str) -> None:
    if proc.poll() is not None:
        return
    try:
        os.kill(proc.pid, signal.SIGTERM)
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        log(f"{name} (pid {proc.pid}) ignored SIGTERM, sending SIGKILL")
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=5)
    except ProcessLookupError:
        pass


class Lines(threading.Thread):
    """Collects a child's output lines (and echoes them, prefixed)."""

    def __init__(self, proc: subprocess.Popen, prefix: str):
        super().__init__(daemon=True)
        self.proc, self.prefix = proc, prefix
        self.lines: list[str] = []
        self.cond = threading.Condition()

    def run(self) -> None:
        for line in iter(self.proc.stdout.readline, ""):
            line = line.rstrip("\n")
            print(f"    {self.prefix}| {line}", flush=True)
            with self.cond:
                self.lines.append(line)
                self.cond.notify_all()
        with self.cond:
            self.cond.notify_all()

    def wait_for(self, pred, timeout: float):
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                for l in self.lines:
                    if pred(l):
                        return l
                left = deadline - time.monotonic()
                if left <= 0 or (self.proc.poll() is not None and not self.is_alive()):
                    return None
                self.cond.wait(min(left, 0.2))


def spawn(argv: list[str], prefix: str) -> tuple[subprocess.Popen, Lines]:
    log("$ " + " ".join(shlex.quote(a) for a in argv))
    proc = subprocess.Popen(
        argv, cwd=ROOT, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True, errors="replace",
    )
    lines = Lines(proc, prefix)
    lines.start()
    return proc, lines


def run_bounded(argv: list[str], prefix: str, timeout: float) -> tuple[int | None, list[str]]:
    """Run to completion (killed by PID after `timeout`); returns (exit code or None, lines)."""
    proc, lines = spawn(argv, prefix)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        log(f"{prefix}: still running after {timeout:.0f}s, killing pid {proc.pid}")
        stop(proc, prefix)
        lines.join(2)
        return None, lines.lines
    lines.join(5)
    return proc.returncode, lines.lines


def build(examples: list[str]) -> None:
    cmd = ["cargo", "build", "--release", "-p", "fullduplex"]
    for e in examples:
        cmd += ["--example", e]
    log("$ " + " ".join(cmd))
    r = subprocess.run(cmd, cwd=ROOT, stdin=subprocess.DEVNULL)
    if r.returncode != 0:
        sys.exit(f"interop: cargo build failed (exit {r.returncode})")


def example_bin(name: str) -> str:
    target = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))
    if not target.is_absolute():
        target = ROOT / target
    return str(target / "release" / "examples" / name)


def with_arg(cmd: str | None, default_bin: str, placeholder: str, value: str) -> list[str]:
    if cmd is None:
        return [default_bin, value]
    argv = shlex.split(cmd)
    if any(placeholder in a for a in argv):
        return [a.replace(placeholder, value) for a in argv]
    return argv + [value]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--no-build", action="store_true", help="do not run cargo build")
    ap.add_argument("--echo-server-cmd", help="instead of our echo_server; '{addr}' -> 127.0.0.1:PORT")
    ap.add_argument("--interop-client-cmd", help="instead of our interop_client; '{url}' -> ws://127.0.0.1:PORT")
    ap.add_argument("--only", action="append", choices=["py_client", "node_client", "py_server", "node_server"],
                    help="run only these peers (repeatable)")
    ap.add_argument("--compress", action="store_true",
                    help="TODO: let the peers negotiate permessage-deflate (off until supported)")
    ap.add_argument("--python", default=sys.executable, help="python with websockets (default: this one)")
    ap.add_argument("--node", default=shutil.which("node") or "node")
    args = ap.parse_args()
    peers = args.only or ["py_client", "node_client", "py_server", "node_server"]
    extra = ["--compress"] if args.compress else []

    if any(p.startswith("node") for p in peers) and not (HERE / "node_modules" / "ws").is_dir():
        sys.exit("interop: interop/node_modules/ws missing; run `npm ci` in interop/")

    need = []
    if args.echo_server_cmd is None and any(p.endswith("_client") for p in peers):
        need.append("echo_server")
    if args.interop_client_cmd is None and any(p.endswith("_server") for p in peers):
        need.append("interop_client")
    if need and not args.no_build:
        build(need)
    for n in need:
        if not Path(example_bin(n)).is_file():
            sys.exit(f"interop: {example_bin(n)} does not exist (build it or drop --no-build)")

    results: list[tuple[str, bool, str]] = []

    # 1. Peers' clients against our echo server.
    clients = [p for p in peers if p.endswith("_client")]
    if clients:
        port = free_port()
        addr = f"127.0.0.1:{port}"
        argv = with_arg(args.echo_server_cmd, example_bin("echo_server"), "{addr}", addr)
        server, _ = spawn(argv, "echo_server")
        try:
            deadline = time.monotonic() + START_TIMEOUT
            while not port_open(port):
                if server.poll() is not None or time.monotonic() > deadline:
                    for c in clients:
                        results.append((f"{c} -> our echo_server", False,
                                        f"echo_server did not start listening on {addr} "
                                        f"(exit {server.poll()})"))
                    clients = []
                    break
                time.sleep(0.1)
            for c in clients:
                script = HERE / ("py_client.py" if c == "py_client" else "node_client.mjs")
                interp = args.python if c == "py_client" else args.node
                t0 = time.monotonic()
                rc, lines = run_bounded([interp, str(script), f"ws://{addr}", *extra], c, STEP_TIMEOUT)
                ok = rc == 0 and f"{c}: ok" in lines
                why = "" if ok else ("timed out" if rc is None else
                                     next((l for l in lines if "FAILED" in l), f"exit {rc}"))
                results.append((f"{c} -> our echo_server", ok, why or f"{time.monotonic() - t0:.1f}s"))
                if server.poll() is not None:
                    log(f"echo_server exited with {server.returncode} during {c}")
        finally:
            stop(server, "echo_server")

    # 2. Our interop_client against the peers' scripted servers.
    for s in (p for p in peers if p.endswith("_server")):
        script = HERE / ("py_server.py" if s == "py_server" else "node_server.mjs")
        interp = args.python if s == "py_server" else args.node
        name = f"our interop_client -> {s}"
        server, lines = spawn([interp, str(script), "0", *extra], s)
        try:
            line = lines.wait_for(lambda l: l.startswith("listening"), START_TIMEOUT)
            if line is None:
                results.append((name, False, f"{s} did not print `listening` (exit {server.poll()})"))
                continue
            url = "ws://" + line.split()[-1]
            t0 = time.monotonic()
            argv = with_arg(args.interop_client_cmd, example_bin("interop_client"), "{url}", url)
            rc, clines = run_bounded(argv, "interop_client", STEP_TIMEOUT)
            # The peer exits by itself once the connection is closed.
            grace = 10 if rc == 0 else 2
            try:
                server.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                log(f"{s} still running {grace}s after the client finished")
            lines.join(2)
            close_ok = "CLOSE 4000 bye" in lines.lines
            problems = []
            if rc is None:
                problems.append("interop_client timed out")
            elif rc != 0:
                problems.append(f"interop_client exited {rc}: "
                                + (clines[-1] if clines else "(no output)"))
            elif "interop_client: ok" not in clines:
                problems.append("interop_client exited 0 but did not print `interop_client: ok`")
            if not close_ok:
                seen = [l for l in lines.lines if l.startswith("CLOSE") or "without a close" in l]
                problems.append(f"{s} did not print `CLOSE 4000 bye` (saw: {seen or 'nothing'})")
            results.append((name, not problems,
                            "; ".join(problems) or f"{time.monotonic() - t0:.1f}s"))
        finally:
            stop(server, s)
            lines.join(2)

    print()
    for name, ok, why in results:
        print(f"  {'PASS' if ok else 'FAIL'}  {name}  ({why})")
    failed = sum(1 for _, ok, _ in results if not ok)
    print(f"interop: {len(results) - failed} passed, {failed} failed")
    return 1 if failed or not results else 0


if __name__ == "__main__":
    sys.exit(main())
