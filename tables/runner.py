"""Run a graph's nodes with submitit — on this machine (``executor=local``) or as SLURM jobs
(``executor=slurm``) with the GPUs each stage's trainer asks for — each after the nodes it needs.

What makes it safe to run, stop and run again, alone or beside another graph:

- a node is finished when its directory holds ``done.json``: a later graph reuses it;
- a graph holds a node's lock (``<store>/<node>.lock``, ``flock``) while its job runs, so a second
  graph needing the same prefix waits for it instead of training it too; a lock dies with its
  holder, and the node then resumes from its checkpoints (``ckpt_path: auto``);
- ``job.json`` names the running job: a graph started again while its job still runs (SLURM, or
  an orphaned local job) waits for that job instead of starting a second one in the same folder;
- a job ended by a preemption (exit 143: it wrote ``preempted.ckpt``) is started again, up to
  ``executor.retries`` times; SIGTERM to the graph stops it after its running jobs checkpoint.
"""

from __future__ import annotations

import datetime
import fcntl
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable, TextIO

from osdic import PROJECT_ROOT
from osdic.utils.files import write_atomically

if TYPE_CHECKING:  # a job's submitit wrapper unpickles JobCommand from here: it must not import Lightning
    from omegaconf import DictConfig

    from tables.graph import Graph, Node

#: what a shell reports for a process ended by SIGTERM: the job checkpointed and can resume
PREEMPTED = 128 + signal.SIGTERM
DONE, EXIT, JOB, PID = "done.json", "job_exit.json", "job.json", "job.pid"
#: what each kind of node leaves when it succeeded
OUTPUTS = {"train": ("final_metrics.json", "codec/codec.json"), "evaluate": ("codec.json",),
           "latency": ("latency.json",)}


def is_done(node: Node) -> bool:
    return (node.directory / DONE).is_file()


def exit_status(status: dict[str, str]) -> int:
    """0 when every node finished, 143 when SIGTERM stopped the graph (run it again: it continues),
    1 when a node failed."""
    outcomes = set(status.values())
    if "stopped" in outcomes:
        return PREEMPTED
    return 1 if outcomes - {"finished", "reused"} else 0


def job_seconds(node: Node) -> float:
    """How long a finished node's job took (its done.json)."""
    return json.loads((node.directory / DONE).read_text())["seconds"]


def schedule_seconds(nodes: list[Node], seconds: dict[str, float], parallel: int) -> float:
    """How long ``nodes`` would take run alone, ``parallel`` jobs at once, each started as the
    runner starts it (in order, once the nodes it needs finished) and taking ``seconds[name]``:
    a table's time estimated from job times measured in a bigger run (an upper bound where those
    jobs shared the cores and would have had them alone)."""
    clock, running, finished, pending = 0.0, {}, set(), list(nodes)
    while pending or running:
        for node in [n for n in pending if all(need.name in finished for need in n.needs)][:parallel - len(running)]:
            running[node.name] = clock + seconds[node.name]
            pending.remove(node)
        if not running:
            raise ValueError(f"{pending[0].name} needs a node outside the ones given")
        name = min(running, key=running.get)
        clock = running.pop(name)
        finished.add(name)
    return clock


class JobCommand:
    """What a submitit job runs: ``python <script> <overrides>`` from the project root, its output
    in ``<node>/job.log``, its exit status in ``job_exit.json`` and its pid in ``job.pid``
    (rank 0). SIGTERM reaching the job (a preemption, a stopped graph) goes to the script, which
    checkpoints and exits with 143."""

    def __init__(self, command: list[str], directory: Path, threads: int | None):
        self.command, self.directory, self.threads = command, directory, threads

    def __call__(self) -> int:
        import submitit

        rank = submitit.JobEnvironment().global_rank
        env = {**os.environ, **({"OMP_NUM_THREADS": str(self.threads), "MKL_NUM_THREADS": str(self.threads)}
                                if self.threads else {})}
        self.directory.mkdir(parents=True, exist_ok=True)
        log = self.directory / ("job.log" if rank == 0 else f"job.rank{rank}.log")
        with log.open("a") as output:
            output.write(f"\n=== {datetime.datetime.now():%Y-%m-%d %H:%M:%S} {' '.join(self.command)}\n")
            output.flush()
            process = subprocess.Popen([sys.executable, *self.command], cwd=PROJECT_ROOT, stdout=output,
                                       stderr=subprocess.STDOUT, env=env)
            if rank == 0:
                write_atomically(self.directory / PID, str(process.pid).encode())
            signal.signal(signal.SIGTERM, lambda *_: process.send_signal(signal.SIGTERM))
            returncode = process.wait()
        if rank == 0:
            write_atomically(self.directory / EXIT, json.dumps({"returncode": returncode}).encode())
        if returncode:
            raise RuntimeError(f"{' '.join(self.command)} exited with {returncode}; see {log}")
        return returncode


def _script_pid(directory: Path) -> int | None:
    """The pid of the script a local job runs for this node, while it runs (a reused pid runs
    something else)."""
    try:
        pid = int((directory / PID).read_text())
        return pid if str(directory) in Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace") else None
    except (OSError, ValueError):
        return None


@dataclass
class Running:
    node: Node
    job: object | None  # a submitit job, or None when waiting for a job an earlier graph started
    lock: TextIO
    started: float = field(default_factory=time.monotonic)
    attempts: int = 1

    def finished(self) -> bool:
        if self.job is not None:
            return self.job.done()
        record = json.loads((self.node.directory / JOB).read_text())
        if record.get("cluster") == "slurm":
            import submitit

            job = submitit.SlurmJob(self.node.directory / ".submitit", record["job_id"])
            return job.state not in ("PENDING", "RUNNING", "REQUEUED", "CONFIGURING", "COMPLETING", "SUSPENDED")
        return _script_pid(self.node.directory) is None

    def returncode(self) -> int | None:
        """The script's exit status; None when the job died before it could record one."""
        path = self.node.directory / EXIT
        return json.loads(path.read_text())["returncode"] if path.is_file() else None


class Runner:
    """Runs the nodes of ``graph`` that are not finished, at most ``executor.parallel`` at once."""

    def __init__(self, graph: Graph, executor: DictConfig, say: Callable[[str], None] = print, poll_s: float = 2.0):
        self.graph, self.executor, self.say, self.poll_s = graph, executor, say, poll_s
        self.status: dict[str, str] = {}  # node key → reused | finished | failed | blocked | stopped
        self.stopping = False

    # ------------------------------------------------------------------ one node's job
    def _submit(self, node: Node, sharing: int = 1) -> object:
        """Start ``node``'s job; on this machine it gets the cores ÷ ``sharing``, the jobs that
        run beside it (a chain's prefix, alone, gets them all)."""
        import submitit

        node.directory.mkdir(parents=True, exist_ok=True)
        cluster = self.executor.cluster
        executor = submitit.AutoExecutor(folder=node.directory / ".submitit", cluster=cluster)
        gpus = node.devices if node.accelerator in ("gpu", "cuda") else 0
        if cluster == "slurm":
            executor.update_parameters(
                name=node.name, timeout_min=self.executor.timeout_min, nodes=node.num_nodes,
                tasks_per_node=max(gpus, 1), gpus_per_node=gpus, cpus_per_task=self.executor.cpus_per_task,
                mem_gb=self.executor.mem_gb_per_gpu * max(gpus, 1), slurm_partition=self.executor.partition,
                slurm_additional_parameters=dict(self.executor.additional_parameters or {}))
            threads = None
        else:  # Lightning starts a multi-device run's processes itself
            executor.update_parameters(timeout_min=self.executor.timeout_min, tasks_per_node=1, gpus_per_node=gpus)
            threads = max(1, (os.cpu_count() or 1) // max(1, min(sharing, self.executor.parallel)))
        for stale in (EXIT, PID):
            (node.directory / stale).unlink(missing_ok=True)
        job = executor.submit(JobCommand(node.command(), node.directory, threads))
        write_atomically(node.directory / JOB, json.dumps({
            "cluster": cluster, "job_id": str(job.job_id), "command": node.command(),
            "submitted": datetime.datetime.now().isoformat(timespec="seconds")}, indent=2).encode())
        return job

    @staticmethod
    def _left_behind(node: Node, lock: TextIO) -> Running | None:
        """The job an earlier graph started for this node (job.json), if it still runs or ended
        since without a graph to record it; None when there is none."""
        if not (node.directory / JOB).is_file():
            return None
        previous = Running(node, None, lock)
        if not previous.finished() or previous.returncode() == 0:
            return previous
        return None

    def _lock(self, node: Node) -> TextIO | None:
        node.store.mkdir(parents=True, exist_ok=True)
        handle = open(node.store / f"{node.name}.lock", "a")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            return None
        return handle

    def _finish(self, running: Running) -> str:
        node, returncode = running.node, running.returncode()
        missing = [name for name in OUTPUTS[node.kind] if not (node.directory / name).is_file()]
        if returncode == 0 and not missing:
            seconds = time.monotonic() - running.started
            write_atomically(node.directory / DONE, json.dumps({
                "key": node.key, "seconds": round(seconds, 1), "attempts": running.attempts,
                "finished": datetime.datetime.now().isoformat(timespec="seconds")}, indent=2).encode())
            self.say(f"[graph] done: {node.name} ({seconds:.0f} s)")
            return "finished"
        log = node.directory / "job.log"
        tail = "".join(log.read_text(errors="replace").splitlines(keepends=True)[-30:]) if log.is_file() else ""
        what = (f"exit {returncode}" if returncode is not None else "died without an exit status") + (
            f", without {missing}" if returncode == 0 else "")
        self.say(f"[graph] FAILED: {node.name} ({what}); the end of {log}:\n{tail}")
        return "failed"

    # ------------------------------------------------------------------------ the loop
    def run(self) -> dict[str, str]:
        """Run until every node finished, failed or waits on a failure; returns each node's status."""
        previous = signal.signal(signal.SIGTERM, self._stop)
        try:
            self._loop()
        finally:
            signal.signal(signal.SIGTERM, previous)
        return self.status

    def _stop(self, signum, frame) -> None:
        """SIGTERM: start nothing more; the running jobs get it too and checkpoint."""
        self.stopping = True
        self.say("[graph] SIGTERM: stopping after the running jobs checkpoint")
        for node in self.graph.nodes:
            pid = _script_pid(node.directory)
            if pid is not None and not is_done(node):
                os.kill(pid, signal.SIGTERM)

    def _loop(self) -> None:
        nodes = self.graph.nodes
        for node in nodes:
            if is_done(node):
                self.status[node.key] = "reused"
        if self.status:
            self.say(f"[graph] {len(self.status)} of {len(nodes)} nodes finished earlier: reused")
        running: dict[str, Running] = {}
        waiting_noted: set[str] = set()
        while True:
            for key, job in list(running.items()):
                if not job.finished():
                    continue
                del running[key]
                outcome = self._finish(job)
                if outcome == "failed" and job.returncode() in (PREEMPTED, None) and not self.stopping \
                        and job.attempts <= self.executor.retries:
                    self.say(f"[graph] {job.node.name} was stopped before its end: starting it again (it resumes "
                             f"from its checkpoint; attempt {job.attempts + 1})")
                    running[key] = Running(job.node, self._submit(job.node, len(running) + 1), job.lock,
                                           attempts=job.attempts + 1)
                    continue
                job.lock.close()
                self.status[key] = "stopped" if self.stopping and outcome == "failed" else outcome
            pending = [n for n in nodes if n.key not in self.status and n.key not in running]
            for node in pending:
                if any(self.status.get(need.key) in ("failed", "blocked", "stopped") for need in node.needs):
                    self.status[node.key] = "blocked"
            pending = [n for n in pending if n.key not in self.status]
            if not pending and not running:
                return
            if not self.stopping:
                ready = [n for n in pending if all(is_done(need) for need in n.needs)]
                for node in pending:
                    if len(running) >= self.executor.parallel:
                        break
                    if not all(is_done(need) for need in node.needs):
                        continue
                    lock = self._lock(node)
                    if lock is None:
                        if node.key not in waiting_noted:
                            waiting_noted.add(node.key)
                            self.say(f"[graph] waiting: another graph runs {node.name}")
                        continue
                    if is_done(node):  # finished by the graph that held it
                        lock.close()
                        self.status[node.key] = "reused"
                        self.say(f"[graph] reused: {node.name} (finished by another graph)")
                        continue
                    previous = self._left_behind(node, lock)
                    if previous is not None:
                        self.say(f"[graph] adopting {node.name}'s job, started by an earlier graph")
                        running[node.key] = previous
                        continue
                    self.say(f"[graph] start: {node.name}" + (" (resumes from its checkpoint)" if (
                        node.directory / "checkpoints").is_dir() else ""))
                    running[node.key] = Running(node, self._submit(node, len(running) + len(ready)), lock)
            elif not running:
                for node in pending:
                    self.status[node.key] = "stopped"
                return
            time.sleep(self.poll_s)
