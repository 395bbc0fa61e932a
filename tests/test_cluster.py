"""The workflow on a real SLURM cluster: a single-node cluster started on this machine from
Debian's packages (scripts/slurm-cluster.sh), the study run through ``--executor slurm`` with
the project's profile (workflow/profiles/slurm), then every daemon stopped.

The small study: the reference stage with a reduced classifier, plus one short testbed session
of the control client, which must run as root with a network namespace on the node (the
profile asks for the node feature ``testbed`` and the node to itself). Checks: the jobs went
through SLURM (job ids in Snakemake's output, one SLURM log each, COMPLETED in squeue's
history), the session job got its constraint and the whole node, a session asking for a node
feature nobody has is refused at submission with a clear message, and a local run replaying
the cluster's raw evidence gives byte-identical tables and figures. Whatever happens, the
cluster is torn down; the test then checks that no process of it is left and that the one
file it may place outside its temporary directory, /etc/slurm/slurm.conf, is gone ("left
behind" is counted from after the packages are installed: on a first install they bring
files of their own to /etc/slurm).

Needs root (munged, slurmctld, slurmd, network namespaces); about two and a half minutes.
"""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import yaml

from reallymuted import artifact

pytestmark = pytest.mark.cluster

MARKER = "REALLYMUTED_SLURM_CLUSTER"
SYSTEM_CONF = Path("/etc/slurm/slurm.conf")
SUBMITTED = re.compile(r"Job \d+ has been submitted with SLURM jobid (\d+) \(log: (\S+)\)")


def small_config(repo: Path) -> dict:
    config = yaml.safe_load((repo / "config.yaml").read_text())
    config["stages"] = {"reference": True, "sessions": True}
    config["classifier"]["windows"] = [3]
    config["classifier"]["models"] = ["majority", "random_forest"]
    sessions = config["sessions"]
    sessions["replay"] = False
    sessions["repetitions"] = 1
    sessions["schedule"] = [
        {"state": "unmuted", "seconds": 2},
        {"state": "muted", "seconds": 2},
        {"state": "unmuted", "seconds": 1},
    ]
    sessions["stimuli"] = {"tone": {"kind": "tone", "seconds": 2}}
    sessions["select"] = ["control-stops"]  # of config.yaml's apps: the control client
    return config


def marked_processes(base: Path) -> list[int]:
    """PIDs whose environment carries the cluster's marker (daemons, job steps, jobs)."""
    needle = f"{MARKER}={base}".encode()
    found = []
    for env in Path("/proc").glob("[0-9]*/environ"):
        try:
            if needle in env.read_bytes().split(b"\0"):
                found.append(int(env.parent.name))
        except OSError:
            continue
    return found


@dataclasses.dataclass
class ClusterRun:
    base: Path
    workdir: Path
    up: subprocess.CompletedProcess
    run: subprocess.CompletedProcess | None
    squeue: str
    session_job: str
    no_node: subprocess.CompletedProcess | None
    down: subprocess.CompletedProcess
    left: list[int]
    conf_left: bool
    etc_slurm_before: list[str]
    etc_slurm_after: list[str]
    seconds: float


def session_without_a_testbed_node(
    repo: Path, study: Path, env: dict[str, str]
) -> subprocess.CompletedProcess:
    """The session of the study again, in a new directory, asking for a node feature that no
    node has: SLURM must refuse the job at submission, and Snakemake must say so and stop."""
    workdir = study.parent / "no-testbed-node"
    (workdir / "results/stimuli").mkdir(parents=True, exist_ok=True)
    shutil.copy(study / "config.yaml", workdir / "config.yaml")
    shutil.copy(study / "results/stimuli/tone.wav", workdir / "results/stimuli/tone.wav")
    target = "results/raw/control-stops/ctrl-tone/rep1/manifest.json"
    command = artifact.snakemake_command(repo, workdir, [workdir / "config.yaml"])
    command[3:3] = [target]  # before the options that take lists
    command += ["--profile", str(repo / "workflow/profiles/slurm")]
    command += ["--set-resources", "session:constraint=nosuchnode"]
    return subprocess.run(
        ["timeout", "-s", "INT", "300", *command], capture_output=True, text=True, env=env
    )


@pytest.fixture(scope="module")
def cluster_run(repo_root: Path, reference_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    if os.geteuid() != 0:
        pytest.skip("the cluster test needs root (it starts munged, slurmctld and slurmd)")
    script = repo_root / "scripts/slurm-cluster.sh"
    # Not under pytest's private (0700) tmp: munged wants every directory above its socket
    # searchable by all. Removed at the end like pytest's own.
    base = Path(tempfile.mkdtemp(prefix="reallymuted-slurm-", dir="/tmp"))
    workdir = tmp_path_factory.mktemp("study")
    (workdir / "config.yaml").write_text(yaml.safe_dump(small_config(repo_root)))
    env = {**os.environ, MARKER: str(base)}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    env.pop("SLURM_CONF", None)  # the jobs' inner srun only finds /etc/slurm/slurm.conf
    started = time.monotonic()
    # Installing the packages puts Debian's own files in /etc/slurm (plugstack.conf, ...):
    # they belong to the installation, so stock is taken after it, before the cluster starts.
    install = subprocess.run(["bash", str(script), "install"], capture_output=True, text=True)
    assert install.returncode == 0, install.stderr[-3000:]
    etc_before = sorted(p.name for p in SYSTEM_CONF.parent.glob("*"))
    run, squeue, session_job, no_node = None, "", "", None
    up = subprocess.run(["bash", str(script), "up", str(base)], capture_output=True, text=True)
    try:
        if up.returncode == 0:
            command = artifact.snakemake_command(repo_root, workdir, [workdir / "config.yaml"])
            command += ["--profile", str(repo_root / "workflow/profiles/slurm")]
            # a shorter first wait than the profile's, for a test of short jobs
            command += ["--slurm-init-seconds-before-status-checks", "2"]
            # SIGINT: Snakemake ignores SIGTERM while it polls SLURM, and cancels its jobs on INT
            run = subprocess.run(
                ["timeout", "-s", "INT", "900", *command],
                capture_output=True,
                text=True,
                env=env,
            )
            squeue = subprocess.run(
                ["squeue", "--states=all", "-h", "-o", "%i|%T|%C|%f|%h|%N"],
                capture_output=True,
                text=True,
                env=env,
            ).stdout
            logs = list((workdir / ".snakemake/slurm_logs/rule_session").rglob("*.log"))
            if logs:
                session_job = subprocess.run(
                    ["scontrol", "show", "job", logs[0].stem],
                    capture_output=True,
                    text=True,
                    env=env,
                ).stdout
            if (workdir / "results/stimuli/tone.wav").is_file():
                no_node = session_without_a_testbed_node(repo_root, workdir, env)
    finally:
        down = subprocess.run(
            ["bash", str(script), "down", str(base)], capture_output=True, text=True
        )
    result = ClusterRun(
        base=base,
        workdir=workdir,
        up=up,
        run=run,
        squeue=squeue,
        session_job=session_job,
        no_node=no_node,
        down=down,
        left=marked_processes(base),
        conf_left=SYSTEM_CONF.exists() or SYSTEM_CONF.is_symlink(),
        etc_slurm_before=etc_before,
        etc_slurm_after=sorted(p.name for p in SYSTEM_CONF.parent.glob("*")),
        seconds=time.monotonic() - started,
    )
    yield result
    if not result.left:  # never delete what a still-running process may be using
        shutil.rmtree(base, ignore_errors=True)


def test_the_workflow_completes_on_slurm(cluster_run: ClusterRun) -> None:
    assert cluster_run.up.returncode == 0, cluster_run.up.stderr[-3000:]
    assert cluster_run.run is not None
    output = cluster_run.run.stdout + cluster_run.run.stderr
    assert cluster_run.run.returncode == 0, output[-5000:]
    assert re.search(r"(\d+) of \1 steps \(100%\) done", output), output[-2000:]
    assert (cluster_run.workdir / "results/tables/claims.csv").stat().st_size > 0


def test_the_jobs_went_through_slurm(cluster_run: ClusterRun) -> None:
    assert cluster_run.run is not None
    output = cluster_run.run.stdout + cluster_run.run.stderr
    submitted = dict(SUBMITTED.findall(output))  # SLURM job id -> its log
    assert len(submitted) >= 10, output[-3000:]
    history = {
        line.split("|")[0]: line.split("|")[1] for line in cluster_run.squeue.splitlines() if line
    }
    for job, log in submitted.items():
        assert history.get(job) == "COMPLETED", (job, history)
        assert Path(log).is_file() and Path(log).name == f"{job}.log", log
    rules = {
        Path(log).relative_to(cluster_run.workdir / ".snakemake/slurm_logs").parts[0]
        for log in submitted.values()
    }
    assert {"rule_session", "rule_classifier_window", "rule_userstudy_figure"} <= rules, rules
    # cheap steps are local rules: they ran in the submitting process, not through sbatch
    assert not rules & {"rule_claims", "rule_session_tables", "rule_reference_verify"}, rules
    assert re.search(r"localrule claims:", output)


def test_the_session_ran_as_root_on_a_whole_testbed_node(cluster_run: ClusterRun) -> None:
    job = cluster_run.session_job
    assert "JobState=COMPLETED" in job, job
    assert "Features=testbed" in job, job
    assert "OverSubscribe=NO" in job, job  # --exclusive: the node to itself
    manifest = yaml.safe_load(
        (cluster_run.workdir / "results/raw/control-stops/ctrl-tone/rep1/manifest.json").read_text()
    )
    assert manifest["status"] == "ok" and manifest["cleanup"]["netns_removed"], manifest
    log = next((cluster_run.workdir / ".snakemake/slurm_logs/rule_session").rglob("*.log"))
    assert "rule session:" in log.read_text()


def test_without_a_testbed_node_sbatch_refuses_the_session(cluster_run: ClusterRun) -> None:
    assert cluster_run.no_node is not None
    output = cluster_run.no_node.stdout + cluster_run.no_node.stderr
    assert cluster_run.no_node.returncode != 0, output[-3000:]
    assert "SLURM sbatch failed" in output, output[-3000:]
    assert "Invalid feature specification" in output, output[-3000:]
    assert "-C nosuchnode" in output


def test_a_local_replay_gives_identical_tables_and_figures(
    repo_root: Path, cluster_run: ClusterRun, tmp_path: Path
) -> None:
    """The session's evidence is real time and cannot be captured twice alike: the local run
    replays the cluster's raw evidence and recomputes everything else."""
    assert cluster_run.run is not None and cluster_run.run.returncode == 0
    shutil.copytree(cluster_run.workdir / "results/raw", tmp_path / "results/raw")
    config = yaml.safe_load((cluster_run.workdir / "config.yaml").read_text())
    config["sessions"]["replay"] = True
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    command = artifact.snakemake_command(repo_root, tmp_path, [tmp_path / "config.yaml"])
    command += ["--workflow-profile", str(repo_root / "workflow/profiles/default"), "-c2"]
    local = subprocess.run(command, capture_output=True, text=True)
    assert local.returncode == 0, local.stderr[-3000:]
    names = [
        str(p.relative_to(cluster_run.workdir))
        for p in (cluster_run.workdir / "results").rglob("*")
        if p.is_file()
        and not str(p.relative_to(cluster_run.workdir)).startswith(
            ("results/raw/", "results/stimuli/")
        )
    ]
    assert any(n.startswith("results/tables/") for n in names)
    assert any(n.startswith("results/figures/timelines/") for n in names)
    different = [
        c
        for c in artifact.compare_trees(cluster_run.workdir, tmp_path, names)
        if c.status != "identical"
    ]
    assert not different, different


def test_no_daemon_or_file_is_left_behind(cluster_run: ClusterRun) -> None:
    assert cluster_run.down.returncode == 0, cluster_run.down.stderr[-3000:]
    assert cluster_run.left == [], f"processes of the cluster still running: {cluster_run.left}"
    assert not cluster_run.conf_left, f"{SYSTEM_CONF} was not removed"
    assert cluster_run.etc_slurm_after == cluster_run.etc_slurm_before
    for name in ("slurmctld", "slurmd", "munged"):  # the check above covered real daemons
        assert (cluster_run.base / "pids" / name).is_file(), f"{name} was never started"
