#!/usr/bin/env python3
"""Run the Autobahn (kosoku) conformance suite against fullduplex and judge the result.

Modes:
  server   build + start the echo_server example on a free loopback port, drive it with
           `kosoku -m fuzzingclient`, stop the testee (by PID).
  client   start `kosoku -m fuzzingserver` on a free loopback port, run the autobahn_client
           example against it, wait for the reports. With `--shards N` (default 2) the cases
           are split over N fuzzingserver + client pairs that run side by side (one pair plays
           one case at a time), reporting into DIR/shard-K/ with a merged DIR/index.json.

Verdicts are read from DIR/index.json and the per-case JSON files (kosoku's exit code is 1
whenever anything is not OK, so it is ignored). A run fails (exit 1) when
  * a case's behavior is not OK/INFORMATIONAL, or its behaviorClose is not OK
    (INFORMATIONAL cases report behaviorClose INFORMATIONAL too, which is accepted), or
  * a case's verdict differs from conformance/expected/<mode>.json and is not (OK, OK), or
  * a case listed in the expected file (and selected) is missing from the report.

Stdlib only. Run with the venv python so `kosoku` is found next to it:
  .venv/bin/python conformance/autobahn.py server
  .venv/bin/python conformance/autobahn.py client -i '12.*' -i '13.*'
  .venv/bin/python conformance/autobahn.py server --update-expected
  .venv/bin/python conformance/autobahn.py server --testee-cmd 'python3 /tmp/echo.py {addr}'
"""

from __future__ import annotations

import argparse
import fnmatch
import json
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
HERE = ROOT / "conformance"

# 8.* does not exist in the suite, and `1.*` does not match `10.*`.
DEFAULT_CASES = ["1.*", "2.*", "3.*", "4.*", "5.*", "6.*", "7.*", "9.*", "10.*"]
CLIENT_AGENT = "fullduplex"
PASS_BEHAVIOR = ("OK", "INFORMATIONAL")


def log(msg: str) -> None:
    print(f"[autobahn] {msg}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def find_kosoku(explicit: str | None) -> str:
    if explicit:
        return explicit
    # Prefer the kosoku that sits next to the running interpreter (the venv), then the
    # repo venv, then PATH.
    for cand in (
        Path(sys.executable).parent / "kosoku",
        ROOT / ".venv" / "bin" / "kosoku",
    ):
        if cand.is_file() and os.access(cand, os.X_OK):
            return str(cand)
    found = shutil.which("kosoku")
    if found:
        return found
    sys.exit("autobahn: kosoku not found (pip install -r interop/requirements.txt into .venv)")


def stop(proc: subprocess.Popen, name: str, grace: float = 5.0) -> None:
    """Stop exactly this child process, by PID."""
    if proc.poll() is not None:
        return
    try:
        os.kill(proc.pid, signal.SIGTERM)
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        log(f"{name} (pid {proc.pid}) ignored SIGTERM, sending SIGKILL")
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=grace)
    except ProcessLookupError:
        pass


def build_example(example: str) -> Path:
    cmd = ["cargo", "build", "--release", "-p", "fullduplex", "--example", example]
    log("$ " + " ".join(cmd))
    r = subprocess.run(cmd, cwd=ROOT, stdin=subprocess.DEVNULL)
    if r.returncode != 0:
        sys.exit(f"autobahn: building example {example} failed (exit {r.returncode})")
    target = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))
    if not target.is_absolute():
        target = ROOT / target
    binary = target / "release" / "examples" / example
    if not binary.is_file():
        sys.exit(f"autobahn: built {example} but {binary} does not exist")
    return binary


def testee_argv(args, example: str, addr: str) -> list[str]:
    if args.testee_cmd:
        argv = shlex.split(args.testee_cmd)
        if any("{addr}" in a for a in argv):
            return [a.replace("{addr}", addr) for a in argv]
        return argv + [addr]
    binary = Path(args.testee_bin) if args.testee_bin else None
    if binary is None:
        if args.no_build:
            binary = ROOT / "target" / "release" / "examples" / example
        else:
            binary = build_example(example)
    return [str(binary), addr]


def clean_outdir(outdir: Path) -> None:
    """Remove old report files (only the files kosoku writes), keep the directory."""
    outdir.mkdir(parents=True, exist_ok=True)
    for p in outdir.iterdir():
        if p.is_file() and (
            p.name in ("index.json", "index.html", "kosoku.log")
            or "_case_" in p.name
        ):
            p.unlink()


class Pump(threading.Thread):
    """Copies a child's stdout to a log file, and notices a marker line."""

    def __init__(self, stream, logfile: Path, marker: str | None = None):
        super().__init__(daemon=True)
        self.stream = stream
        self.logfile = logfile
        self.marker = marker
        self.seen = threading.Event()

    def run(self) -> None:
        with open(self.logfile, "a", encoding="utf-8", errors="replace") as f:
            for line in iter(self.stream.readline, ""):
                f.write(line)
                f.flush()
                if self.marker and self.marker in line:
                    self.seen.set()


def run_server_mode(args, outdir: Path, kosoku: str) -> None:
    port = free_port()
    addr = f"127.0.0.1:{port}"
    argv = testee_argv(args, "echo_server", addr)
    testee_log = outdir / "testee.log"
    log("$ " + " ".join(shlex.quote(a) for a in argv) + f"   (log: {testee_log})")
    with open(testee_log, "w") as tlog:
        testee = subprocess.Popen(
            argv, cwd=ROOT, stdin=subprocess.DEVNULL, stdout=tlog, stderr=subprocess.STDOUT
        )
    try:
        deadline = time.monotonic() + args.startup_timeout
        while not port_open(port):
            if testee.poll() is not None:
                sys.exit(
                    f"autobahn: testee exited with {testee.returncode} before listening; "
                    f"see {testee_log}:\n" + tail(testee_log)
                )
            if time.monotonic() > deadline:
                sys.exit(f"autobahn: testee did not listen on {addr} within {args.startup_timeout}s")
            time.sleep(0.1)
        cmd = [kosoku, "-m", "fuzzingclient", addr, "-p", str(args.parallel), "-o", str(outdir)]
        for g in args.include:
            cmd += ["-i", g]
        for g in args.exclude:
            cmd += ["-x", g]
        log("$ " + " ".join(shlex.quote(c) for c in cmd))
        t0 = time.monotonic()
        try:
            with open(outdir / "kosoku.log", "w") as klog:
                subprocess.run(
                    cmd, stdin=subprocess.DEVNULL, stdout=klog, stderr=subprocess.STDOUT,
                    timeout=args.timeout,
                )
        except subprocess.TimeoutExpired:
            sys.exit(f"autobahn: kosoku fuzzingclient did not finish within {args.timeout}s")
        log(f"kosoku finished in {time.monotonic() - t0:.1f}s")
        if testee.poll() is not None:
            log(f"WARNING: testee exited during the run with code {testee.returncode}")
    finally:
        stop(testee, "testee")


def client_shards(args, expected_path: Path) -> list[list[str]]:
    """The include lists of the client-mode shards.

    kosoku's fuzzingserver runs its cases one after another, so one client run uses one core.
    With `--shards N` the selected cases (from the expected file, in suite order) are dealt
    round-robin to N fuzzingserver + client pairs that run at the same time; neighbouring
    cases differ mostly in message size, so the shards get about the same work. Without an
    expected file (or with few cases) there is one shard with the globs as given.
    """
    n = max(1, args.shards)
    if n == 1 or not expected_path.exists():
        return [args.include]
    ids = sorted(
        (c for c in json.loads(expected_path.read_text())
         if selected(c, args.include, args.exclude)),
        key=case_key,
    )
    if len(ids) < 2 * n:
        return [args.include]
    return [ids[k::n] for k in range(n)]


class ClientShard:
    """One kosoku fuzzingserver and one client testee, reporting into their own directory."""

    def __init__(self, args, kosoku: str, testee: list[str], outdir: Path, include: list[str],
                 exclude: list[str]):
        """`testee` is the client's argv with the placeholder URL ws://127.0.0.1:0."""
        self.args = args
        self.outdir = outdir
        clean_outdir(outdir)
        port = free_port()
        url = f"ws://127.0.0.1:{port}"
        self.argv = [a.replace("ws://127.0.0.1:0", url) for a in testee]
        cmd = [kosoku, "-m", "fuzzingserver", f"127.0.0.1:{port}", "-o", str(outdir)]
        for g in include:
            cmd += ["-i", g]
        for g in exclude:
            cmd += ["-x", g]
        shown = cmd if len(cmd) < 40 else cmd[:12] + [f"... ({len(include)} cases)"]
        log("$ " + " ".join(shlex.quote(c) for c in shown))
        self.klog = outdir / "kosoku.log"
        self.server = subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            text=True, errors="replace",
        )
        self.pump = Pump(self.server.stdout, self.klog, marker="listening")
        self.pump.start()
        self.testee: subprocess.Popen | None = None
        self.tlog = None

    def wait_listening(self) -> None:
        deadline = time.monotonic() + self.args.startup_timeout
        while not self.pump.seen.is_set():
            if self.server.poll() is not None:
                self.pump.join(2)
                sys.exit(f"autobahn: fuzzingserver exited with {self.server.returncode}:\n"
                         + tail(self.klog))
            if time.monotonic() > deadline:
                sys.exit(f"autobahn: fuzzingserver did not listen within "
                         f"{self.args.startup_timeout}s")
            time.sleep(0.05)

    def start_testee(self) -> None:
        testee_log = self.outdir / "testee.log"
        log("$ " + " ".join(shlex.quote(a) for a in self.argv) + f"   (log: {testee_log})")
        self.tlog = open(testee_log, "w")
        self.testee = subprocess.Popen(
            self.argv, cwd=ROOT, stdin=subprocess.DEVNULL, stdout=self.tlog,
            stderr=subprocess.STDOUT,
        )

    def finish(self, deadline: float) -> int:
        """Waits for the testee (until `deadline`) and then for the reports."""
        assert self.testee is not None
        try:
            rc = self.testee.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            stop(self.testee, "client testee")
            sys.exit(f"autobahn: client testee did not finish within {self.args.timeout}s; "
                     f"see {self.outdir / 'testee.log'}:\n" + tail(self.outdir / "testee.log"))
        finally:
            if self.tlog:
                self.tlog.close()
        if rc != 0:
            log(f"WARNING: client testee exited with {rc}; see {self.outdir / 'testee.log'}:\n"
                + tail(self.outdir / "testee.log"))
        # After /updateReports the fuzzingserver writes the reports and exits.
        try:
            self.server.wait(timeout=self.args.report_timeout)
        except subprocess.TimeoutExpired:
            log(f"fuzzingserver still running {self.args.report_timeout}s after the client "
                "finished (did the client call /updateReports?)")
        if rc != 0 and not (self.outdir / "index.json").exists():
            sys.exit(f"autobahn: client testee failed (exit {rc}) and no report was written")
        return rc

    def stop(self) -> None:
        if self.testee is not None:
            stop(self.testee, "client testee")
        stop(self.server, "fuzzingserver")
        self.pump.join(2)


def merge_shard_reports(outdir: Path, shard_dirs: list[Path]) -> None:
    """Writes OUTDIR/index.json from the shards' reports (report files stay in the shards)."""
    merged: dict[str, dict] = {}
    for d in shard_dirs:
        index_path = d / "index.json"
        if not index_path.exists():
            sys.exit(f"autobahn: no report at {index_path}; kosoku log:\n" + tail(d / "kosoku.log"))
        for agent, cases in json.loads(index_path.read_text()).items():
            for cid, entry in cases.items():
                if entry.get("reportfile"):
                    entry["reportfile"] = f"{d.name}/{entry['reportfile']}"
                merged.setdefault(agent, {})[cid] = entry
    (outdir / "index.json").write_text(json.dumps(merged, indent=1))
    links = "".join(f'<li><a href="{d.name}/index.html">{d.name}</a></li>' for d in shard_dirs)
    (outdir / "index.html").write_text(
        f"<!doctype html><title>Autobahn client report</title><ul>{links}</ul>\n"
    )


def run_client_mode(args, outdir: Path, kosoku: str, expected_path: Path) -> int:
    """Returns the first non-zero exit code of the client testees (0 when all exit 0)."""
    testee = testee_argv(args, "autobahn_client", "ws://127.0.0.1:0")  # builds the example
    plan = client_shards(args, expected_path)
    if len(plan) == 1:
        dirs = [outdir]
        excludes = [args.exclude]
    else:
        dirs = [outdir / f"shard-{k + 1}" for k in range(len(plan))]
        excludes = [[] for _ in plan]  # explicit case ids, already filtered
        log(f"{sum(map(len, plan))} cases in {len(plan)} shards run at the same time")
    shards: list[ClientShard] = []
    try:
        for include, exclude, d in zip(plan, excludes, dirs):
            shards.append(ClientShard(args, kosoku, testee, d, include, exclude))
        for s in shards:
            s.wait_listening()
        t0 = time.monotonic()
        for s in shards:
            s.start_testee()
        deadline = t0 + args.timeout
        codes = [s.finish(deadline) for s in shards]
        log(f"client testee(s) finished in {time.monotonic() - t0:.1f}s (exit {codes})")
    finally:
        for s in shards:
            s.stop()
    if len(shards) > 1:
        merge_shard_reports(outdir, dirs)
    return next((c for c in codes if c != 0), 0)


def tail(path: Path, n: int = 30) -> str:
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return "(no log)"
    return "\n".join("    " + l for l in lines[-n:])


def selected(case_id: str, include: list[str], exclude: list[str]) -> bool:
    inc = any(fnmatch.fnmatchcase(case_id, g) for g in include) if include else True
    return inc and not any(fnmatch.fnmatchcase(case_id, g) for g in exclude)


def case_key(case_id: str) -> list[int]:
    return [int(p) if p.isdigit() else 0 for p in case_id.split(".")]


def passes(verdict: tuple[str, str]) -> bool:
    behavior, close = verdict
    if behavior not in PASS_BEHAVIOR:
        return False
    # Informational cases carry an INFORMATIONAL close verdict as well.
    return close == "OK" or (behavior == "INFORMATIONAL" and close == "INFORMATIONAL")


def load_results(outdir: Path, mode: str) -> tuple[str, dict[str, dict]]:
    index_path = outdir / "index.json"
    if not index_path.exists():
        sys.exit(f"autobahn: no report at {index_path}; kosoku log:\n" + tail(outdir / "kosoku.log"))
    index = json.loads(index_path.read_text())
    if mode == "client" and CLIENT_AGENT in index:
        agent = CLIENT_AGENT
    elif len(index) == 1:
        agent = next(iter(index))
    else:
        sys.exit(f"autobahn: expected one agent in {index_path}, found {sorted(index)}")
    return agent, index[agent]


def case_details(outdir: Path, entry: dict) -> dict:
    rf = entry.get("reportfile")
    if not rf:
        return {}
    try:
        return json.loads((outdir / rf).read_text())
    except (OSError, ValueError):
        return {}


def shorten(s, n: int = 300) -> str:
    s = " ".join(str(s).split())
    return s if len(s) <= n else s[: n - 3] + "..."


def judge(args, mode: str, outdir: Path, expected_path: Path) -> int:
    agent, results = load_results(outdir, mode)
    verdicts = {
        cid: (e.get("behavior", "?"), e.get("behaviorClose", "?"))
        for cid, e in results.items()
    }
    expected_all: dict[str, list[str]] = {}
    if expected_path.exists():
        expected_all = json.loads(expected_path.read_text())
    elif not args.update_expected:
        log(f"WARNING: {expected_path} does not exist; judging verdicts only")
    expected = {
        cid: tuple(v) for cid, v in expected_all.items()
        if selected(cid, args.include, args.exclude)
    }

    if args.update_expected:
        merged = {cid: v for cid, v in expected_all.items()
                  if not selected(cid, args.include, args.exclude)}
        merged.update({cid: list(v) for cid, v in verdicts.items()})
        ordered = {cid: merged[cid] for cid in sorted(merged, key=case_key)}
        expected_path.parent.mkdir(parents=True, exist_ok=True)
        expected_path.write_text(
            "{\n" + ",\n".join(f"  {json.dumps(c)}: {json.dumps(v)}" for c, v in ordered.items())
            + "\n}\n"
        )
        log(f"wrote {len(ordered)} expectations to {expected_path}")
        expected = {cid: tuple(v) for cid, v in verdicts.items()}

    problems: list[tuple[str, str]] = []  # (case id, reason)
    for cid in sorted(verdicts, key=case_key):
        v = verdicts[cid]
        exp = expected.get(cid)
        if exp is not None and v != exp and v != ("OK", "OK"):
            problems.append((cid, f"regression, expected {exp[0]}/{exp[1]}"))
        elif not passes(v):
            problems.append((cid, "not OK" + (" (same as expected)" if exp == v else "")))
    missing = sorted((c for c in expected if c not in verdicts), key=case_key)
    new = sorted((c for c in verdicts if c not in expected), key=case_key)
    improved = sorted(
        (c for c in verdicts if c in expected and verdicts[c] != expected[c]
         and verdicts[c] == ("OK", "OK")),
        key=case_key,
    )

    counts: dict[str, int] = {}
    for b, _ in verdicts.values():
        counts[b] = counts.get(b, 0) + 1
    n_ok = counts.pop("OK", 0)
    n_info = counts.pop("INFORMATIONAL", 0)
    n_other = sum(counts.values())
    other_detail = (" (" + ", ".join(f"{v} {k}" for k, v in sorted(counts.items())) + ")") if counts else ""

    for n, (cid, reason) in enumerate(problems):
        e = results[cid]
        print(f"  {cid}: behavior={e.get('behavior')} behaviorClose={e.get('behaviorClose')} "
              f"[{reason}]")
        d = case_details(outdir, e) if n < args.details else {}
        if d:
            print(f"      description: {shorten(d.get('description', ''))}")
            print(f"      expectation: {shorten(d.get('expectation', ''))}")
            print(f"      result:      {shorten(d.get('result', ''))}")
            print(f"      resultClose: {shorten(d.get('resultClose', ''))}")
            print(f"      close codes: local={d.get('localCloseCode')} "
                  f"remote={d.get('remoteCloseCode')} reason={d.get('remoteCloseReason')!r}")
            print(f"      report: {outdir / e.get('reportfile', '?')}")
    if len(problems) > args.details:
        print(f"  ({len(problems) - args.details} more without details; raise --details N)")
    for cid in missing:
        print(f"  {cid}: MISSING from the report (expected {expected[cid][0]}/{expected[cid][1]})")
    if new and expected_path.exists() and not args.update_expected:
        print(f"  note: {len(new)} case(s) not in {expected_path.name}: "
              f"{', '.join(new[:10])}{' ...' if len(new) > 10 else ''} "
              "(run with --update-expected to record them)")
    if improved and not args.update_expected:
        print(f"  note: improved vs expected: {', '.join(improved)} "
              "(run with --update-expected to record)")

    print(f"autobahn {mode}: {n_ok} OK, {n_info} INFORMATIONAL, {n_other} other{other_detail}"
          f" — {len(verdicts)} cases, agent {agent!r}, report {outdir / 'index.html'}")
    failed = bool(problems or missing)
    if failed:
        print(f"autobahn {mode}: FAILED ({len(problems)} bad case(s), {len(missing)} missing)")
    return 1 if failed else 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("mode", choices=["server", "client"])
    ap.add_argument("-i", "--include", action="append", metavar="GLOB",
                    help="case glob to run, repeatable; replaces the default "
                         f"({' '.join(DEFAULT_CASES)})")
    ap.add_argument("--all", action="store_true", help="run every case (1.* to 13.*)")
    ap.add_argument("-x", "--exclude", action="append", default=[], metavar="GLOB",
                    help="case glob to exclude, repeatable")
    ap.add_argument("-o", "--outdir", help="report directory (default conformance/reports/MODE)")
    ap.add_argument("--expected", help="expected-results file (default conformance/expected/MODE.json)")
    ap.add_argument("--update-expected", action="store_true",
                    help="rewrite the expected file with this run's verdicts (selected cases only)")
    ap.add_argument("--judge-only", action="store_true",
                    help="do not run anything, judge the existing report in OUTDIR")
    ap.add_argument("--testee-cmd",
                    help="command to run instead of the Rust example; '{addr}' is replaced by "
                         "HOST:PORT (server) or ws://HOST:PORT (client), else it is appended")
    ap.add_argument("--testee-bin", help="prebuilt testee binary (skips cargo build)")
    ap.add_argument("--no-build", action="store_true",
                    help="use target/release/examples/* as is, do not run cargo build")
    ap.add_argument("--kosoku", help="path to kosoku (default: next to this python, .venv, PATH)")
    ap.add_argument("-p", "--parallel", type=int, default=2,
                    help="parallel cases in server mode (default 2)")
    ap.add_argument("--shards", type=int, default=2,
                    help="client mode: split the cases over N fuzzingserver + client pairs that "
                         "run at the same time (default 2; 1 = one sequential run)")
    ap.add_argument("--timeout", type=float, default=900.0,
                    help="bound for the kosoku run (server) / the client testee (client), seconds")
    ap.add_argument("--startup-timeout", type=float, default=30.0)
    ap.add_argument("--report-timeout", type=float, default=60.0,
                    help="client mode: wait this long for the reports after the client exits")
    ap.add_argument("--details", type=int, default=25,
                    help="print case details for at most N bad cases (default 25)")
    args = ap.parse_args()
    sys.stdout.reconfigure(line_buffering=True)

    if args.all:
        args.include = []
    elif not args.include:
        args.include = list(DEFAULT_CASES)
    outdir = Path(args.outdir) if args.outdir else HERE / "reports" / args.mode
    outdir = outdir.resolve()
    expected_path = Path(args.expected) if args.expected else HERE / "expected" / f"{args.mode}.json"

    client_rc = 0
    if not args.judge_only:
        kosoku = find_kosoku(args.kosoku)
        clean_outdir(outdir)
        if args.mode == "server":
            run_server_mode(args, outdir, kosoku)
        else:
            client_rc = run_client_mode(args, outdir, kosoku, expected_path)
    rc = judge(args, args.mode, outdir, expected_path)
    if client_rc != 0:
        print(f"autobahn client: FAILED, the client testee exited with {client_rc} "
              "(it must exit 0, ignoring the dropped /updateReports connection)")
        rc = 1
    return rc


if __name__ == "__main__":
    sys.exit(main())
