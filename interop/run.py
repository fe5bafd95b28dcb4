#!/usr/bin/env python3
"""Interop tests: fullduplex against Python `websockets` and Node `ws` (see interop/README.md).

The matrix {py, node} x {client role, server role} x {off, takeover, no-takeover} (12 runs):
  1. start our echo_server (restarted if it dies); run py_client.py and node_client.mjs
     against it with `--compress MODE`;
  2. start py_server.py / node_server.mjs with `--compress MODE`; run our interop_client with
     the same `--compress MODE`, check its exit code, that the peer printed `CLOSE 4000 bye`,
     the extension it answered (`EXTENSIONS ...`) and how many of our messages arrived
     compressed (`STATS ...`).

Every process is started and stopped by PID, every step is time-bounded, loopback only.
Run with the venv python (it is also used for the Python peers):
  .venv/bin/python interop/run.py
  .venv/bin/python interop/run.py --no-build --compress takeover --only py_server
  .venv/bin/python interop/run.py --echo-server-cmd 'python3 /tmp/echo.py {addr}' \
      --interop-client-cmd 'python3 /tmp/client.py {url}'    # gets `--compress MODE` appended
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


MODES = ["off", "takeover", "no-takeover"]
PEERS = ["py_client", "node_client", "py_server", "node_server"]


class EchoServer:
    """Our echo_server on a free loopback port, (re)started on demand, stopped by PID."""

    def __init__(self, argv_for):
        self.argv_for = argv_for
        self.proc: subprocess.Popen | None = None
        self.addr = ""

    def ensure(self) -> str | None:
        """Returns None when the server is listening, else why not."""
        if self.proc is not None and self.proc.poll() is None:
            return None
        if self.proc is not None:
            log(f"echo_server exited with {self.proc.returncode}; restarting it")
        port = free_port()
        self.addr = f"127.0.0.1:{port}"
        self.proc, _ = spawn(self.argv_for(self.addr), "echo_server")
        deadline = time.monotonic() + START_TIMEOUT
        while not port_open(port):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                return f"echo_server did not start listening on {self.addr} (exit {self.proc.poll()})"
            time.sleep(0.1)
        return None

    def stop(self) -> None:
        if self.proc is not None:
            stop(self.proc, "echo_server")


def parse_stats(lines: list[str]) -> dict[str, int] | None:
    for l in lines:
        if l.startswith("STATS "):
            try:
                return {k: int(v) for k, v in (f.split("=", 1) for f in l.split()[1:])}
            except ValueError:
                return None
    return None


def stats_detail(stats: dict[str, int]) -> str:
    """`compressed/received`, and wire/plain bytes of the compressed messages under 1 KiB."""
    wire, plain = stats.get("small_wire", 0), stats.get("small_plain", 0)
    small = f"<1KiB: {wire}/{plain} B on the wire = {wire / plain:.0%}" if plain else "no small ones"
    return f"{stats.get('compressed', 0)}/{stats.get('received', 0)} msgs compressed, {small}"


def run_client(c: str, mode: str, echo: EchoServer, args) -> tuple[bool, str]:
    """A peer's client against our echo_server."""
    problem = echo.ensure()
    if problem:
        return False, problem
    script = HERE / ("py_client.py" if c == "py_client" else "node_client.mjs")
    interp = args.python if c == "py_client" else args.node
    rc, lines = run_bounded([interp, str(script), f"ws://{echo.addr}", "--compress", mode], c, STEP_TIMEOUT)
    if echo.proc.poll() is not None:
        log(f"echo_server exited with {echo.proc.returncode} during {c} [{mode}]")
    if rc is None:
        return False, "timed out"
    if rc != 0 or f"{c}: ok" not in lines:
        return False, next((l for l in lines if "FAILED" in l), f"exit {rc}")
    stats = parse_stats(lines)
    if stats is None:
        return False, f"{c} printed no STATS line"
    if mode == "off":
        if stats.get("compressed", 0):
            return False, f"{stats['compressed']} compressed echoes with compression off"
        return True, ""
    return True, stats_detail(stats)


def run_server(s: str, mode: str, args) -> tuple[bool, str]:
    """Our interop_client against a peer's scripted server."""
    script = HERE / ("py_server.py" if s == "py_server" else "node_server.mjs")
    interp = args.python if s == "py_server" else args.node
    server, lines = spawn([interp, str(script), "0", "--compress", mode], s)
    try:
        line = lines.wait_for(lambda l: l.startswith("listening"), START_TIMEOUT)
        if line is None:
            return False, f"{s} did not print `listening` (exit {server.poll()})"
        url = "ws://" + line.split()[-1]
        argv = with_arg(args.interop_client_cmd, example_bin("interop_client"), "{url}", url)
        rc, clines = run_bounded(argv + ["--compress", mode], "interop_client", STEP_TIMEOUT)
        # The peer exits by itself once the connection is closed.
        grace = 10 if rc == 0 else 2
        try:
            server.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            log(f"{s} still running {grace}s after the client finished")
        lines.join(2)
        problems = []
        if rc is None:
            problems.append("interop_client timed out")
        elif rc != 0:
            problems.append(f"interop_client exited {rc}: "
                            + next((l for l in clines if "FAILED" in l), clines[-1] if clines else "(no output)"))
        elif "interop_client: ok" not in clines:
            problems.append("interop_client exited 0 but did not print `interop_client: ok`")
        if "CLOSE 4000 bye" not in lines.lines:
            seen = [l for l in lines.lines if l.startswith("CLOSE") or "without a close" in l]
            problems.append(f"{s} did not print `CLOSE 4000 bye` (saw: {seen or 'nothing'})")
        ext = next((l[len("EXTENSIONS "):] for l in lines.lines if l.startswith("EXTENSIONS ")), None)
        if ext is None:
            problems.append(f"{s} printed no EXTENSIONS line (no handshake?)")
        elif mode == "off" and ext != "none":
            problems.append(f"{s} answered {ext!r} with compression off")
        elif mode != "off" and not ext.startswith("permessage-deflate"):
            problems.append(f"{s} answered {ext!r}, expected permessage-deflate")
        elif mode == "no-takeover" and not ("server_no_context_takeover" in ext
                                            and "client_no_context_takeover" in ext):
            problems.append(f"{s} answered {ext!r}, expected both *_no_context_takeover flags")
        stats = parse_stats(lines.lines)
        detail = ""
        if rc == 0 and stats is None:
            problems.append(f"{s} printed no STATS line")
        elif stats is not None:
            # Our client compresses every message of at least 64 bytes (the default threshold):
            # at least the 1,000 JSON texts of the bulk phase.
            if mode == "off" and stats.get("compressed", 0) != 0:
                problems.append(f"{s} received {stats['compressed']} compressed messages with compression off")
            elif mode != "off" and rc == 0 and stats.get("compressed", 0) < 1000:
                problems.append(f"{s} received only {stats.get('compressed', 0)} compressed messages "
                                f"of {stats.get('received')} (expected at least the 1,000 bulk texts)")
            if mode != "off":
                detail = stats_detail(stats)
        return not problems, "; ".join(problems) or detail
    finally:
        stop(server, s)
        lines.join(2)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--no-build", action="store_true", help="do not run cargo build")
    ap.add_argument("--echo-server-cmd", help="instead of our echo_server; '{addr}' -> 127.0.0.1:PORT")
    ap.add_argument("--interop-client-cmd",
                    help="instead of our interop_client; '{url}' -> ws://127.0.0.1:PORT; "
                         "`--compress MODE` is appended")
    ap.add_argument("--only", action="append", choices=PEERS, help="run only these peers (repeatable)")
    ap.add_argument("--compress", action="append", choices=MODES,
                    help="run only these permessage-deflate modes (repeatable; default: all three)")
    ap.add_argument("--python", default=sys.executable, help="python with websockets (default: this one)")
    ap.add_argument("--node", default=shutil.which("node") or "node")
    args = ap.parse_args()
    peers = [p for p in PEERS if p in (args.only or PEERS)]
    modes = [m for m in MODES if m in (args.compress or MODES)]

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

    t_start = time.monotonic()
    results: list[tuple[str, str, bool, float, str]] = []
    echo = EchoServer(lambda addr: with_arg(args.echo_server_cmd, example_bin("echo_server"), "{addr}", addr))
    try:
        for mode in modes:
            for p in peers:
                log(f"--- {p} [{mode}]")
                t0 = time.monotonic()
                if p.endswith("_client"):
                    name = f"{p} -> our echo_server"
                    ok, why = run_client(p, mode, echo, args)
                else:
                    name = f"our interop_client -> {p}"
                    ok, why = run_server(p, mode, args)
                results.append((name, mode, ok, time.monotonic() - t0, why))
    finally:
        echo.stop()

    print()
    width = max((len(r[0]) for r in results), default=0)
    for name, mode, ok, secs, why in results:
        print(f"  {'PASS' if ok else 'FAIL'}  {name:<{width}}  {mode:<11}  {secs:5.1f}s  {why}")
    failed = sum(1 for r in results if not r[2])
    print(f"interop: {len(results) - failed} passed, {failed} failed "
          f"({time.monotonic() - t_start:.1f}s without the build)")
    return 1 if failed or not results else 0


if __name__ == "__main__":
    sys.exit(main())
