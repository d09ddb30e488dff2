"""`wall-oss launch`: runs the ROS 2 YAML launch files in launch/ without `ros2 launch`.

`wall_oss_ros.launch_plan` resolves a launch file to a `LaunchPlan` (which YAML subset is understood,
how nodes become command lines); this module starts the plan's processes and supervises them.

Running: every node's output is prefixed with its name; Ctrl-C (or SIGTERM) sends SIGINT to every
node, waits, then SIGKILLs stragglers and exits 0; a node that dies while the graph runs stops the
others and the runner exits 1 naming it.
"""
from __future__ import annotations

import contextlib
import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import TextIO

from wall_oss_core.paths import share_file
from wall_oss_ros.launch_plan import (
    LaunchError,
    LaunchPlan,
    NodeAction,
    parse_assignments,
    plan_launch,
    resolve_launch_file,
)


class LaunchRunner:
    """Starts a LaunchPlan's nodes and supervises them (see the module docstring for the rules)."""

    def __init__(self, plan: LaunchPlan, *, stream: TextIO | None = sys.stdout, log_dir: Path | None = None,
                 shutdown_timeout: float = 10.0):
        self.plan = plan
        self.stream = stream
        self.log_dir = Path(log_dir) if log_dir is not None else None
        self.shutdown_timeout = shutdown_timeout
        self.processes: dict[str, subprocess.Popen] = {}
        self.killed: set[str] = set()  # nodes kill_node ended, whose -9 is no shutdown failure
        self._readers: list[threading.Thread] = []
        self._print_lock = threading.Lock()
        self._stopping = False

    def _say(self, text: str) -> None:
        if self.stream is not None:
            with self._print_lock:
                self.stream.write(f"[launch] {text}\n")
                self.stream.flush()

    def start(self) -> None:
        for note in self.plan.skipped:
            self._say(note)
        if self.log_dir is not None:
            self.log_dir.mkdir(parents=True, exist_ok=True)
        base_env = dict(os.environ)
        base_env.setdefault("FASTDDS_DEFAULT_PROFILES_FILE", str(share_file("config/fastdds.xml")))
        base_env["PYTHONUNBUFFERED"] = "1"
        for node in self.plan.nodes:
            process = subprocess.Popen(node.command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                       stdin=subprocess.DEVNULL, env={**base_env, **node.env}, start_new_session=True)
            self.processes[node.name] = process
            reader = threading.Thread(target=self._forward_output, args=(node, process), daemon=True,
                                      name=f"output_{node.name}")
            reader.start()
            self._readers.append(reader)
            self._say(f"started {node.fully_qualified_name} (pid {process.pid})")

    def _forward_output(self, node: NodeAction, process: subprocess.Popen) -> None:
        echo = self.stream is not None and node.output in ("screen", "both")
        with contextlib.ExitStack() as stack:
            stack.callback(process.stdout.close)
            log = stack.enter_context(open(self.log_dir / f"{node.name}.log", "w")) if self.log_dir else None
            for raw in iter(process.stdout.readline, b""):
                line = raw.decode(errors="replace")
                if log is not None:
                    log.write(line)
                    log.flush()
                if echo:
                    with self._print_lock:
                        self.stream.write(f"[{node.name}] {line}" if line.endswith("\n") else f"[{node.name}] {line}\n")
                        self.stream.flush()

    def dead_node(self) -> tuple[str, int] | None:
        """(name, exit code) of a node that exited while the graph was running, else None."""
        if self._stopping:
            return None
        for name, process in self.processes.items():
            code = process.poll()
            if code is not None:
                return name, code
        return None

    def kill_node(self, name: str) -> None:
        """SIGKILL one node, as a crash would (tests use this)."""
        process = self.processes[name]
        if process.poll() is None:
            self.killed.add(name)
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(5)

    def stop(self) -> None:
        """SIGINT every running node, wait up to shutdown_timeout, SIGKILL the rest."""
        self._stopping = True
        for process in self.processes.values():
            if process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGINT)
        deadline = time.monotonic() + self.shutdown_timeout
        for name, process in self.processes.items():
            try:
                process.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                self._say(f"{name} did not exit within {self.shutdown_timeout:g} s of SIGINT; killing it")
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait(5)
        for reader in self._readers:
            reader.join(timeout=2.0)
        self.plan.cleanup()

    def run(self) -> int:
        """Start, supervise until Ctrl-C / SIGTERM (exit 0) or a node dies (exit 1), stop everything."""
        interrupted = threading.Event()
        previous = {sig: signal.signal(sig, lambda *_: interrupted.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            self.start()
            if not self.plan.nodes:
                self._say("no nodes to run")
                return 0
            while not interrupted.wait(0.1):
                dead = self.dead_node()
                if dead is not None:
                    name, code = dead
                    self._say(f"node {name!r} died (exit code {code}); stopping the others")
                    return 1
            self._say("interrupted; stopping all nodes")
            return 0
        finally:
            self.stop()
            for sig, handler in previous.items():
                signal.signal(sig, handler)


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser("launch", help="run a launch/*.launch.yaml file (the same files ros2 launch runs)")
    parser.add_argument("file", help="launch file path, or a file name in the package's launch/ directory")
    parser.add_argument("arguments", nargs="*", metavar="name:=value", help="launch argument overrides")
    parser.add_argument("--show-args", action="store_true", help="print the launch arguments and exit")
    parser.add_argument("--print-commands", action="store_true", help="print each node's command line and exit")
    parser.add_argument("--log-dir", type=Path, help="also write each node's output to <log-dir>/<node>.log")


def run(args) -> int:
    try:
        plan = plan_launch(resolve_launch_file(args.file), parse_assignments(args.arguments))
    except LaunchError as error:
        print(f"wall-oss launch: {error}", file=sys.stderr)
        return 2
    if args.show_args or args.print_commands:
        if args.show_args:
            for name, value in plan.arguments.items():
                description = plan.argument_descriptions.get(name, "")
                print(f"{name}:={value!r}" + (f"    # {description}" if description else ""))
        if args.print_commands:
            for node in plan.nodes:
                print(f"{node.fully_qualified_name}: {shlex.join(node.command)}")
            for note in plan.skipped:
                print(f"# {note}")
        plan.cleanup()
        return 0
    return LaunchRunner(plan, log_dir=args.log_dir).run()
