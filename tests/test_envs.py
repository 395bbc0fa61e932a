"""The environments agree: conda envs, pip pins, Debian packages, and the rules that use them.

Three lists name the versions the study runs with: ``requirements.txt`` (pip, installed by
``make setup``), ``envs/*.yaml`` (conda environments per rule family, for ``--sdm conda``)
and ``envs/apt.txt`` + ``envs/apt-cluster.txt`` (Debian package names; their versions are
recorded in ``envs/apt.lock``, because a ``name=version`` pin in the install list would stop
``make setup`` working on a fresh Debian 12 as soon as the mirror moves on to a security
update). These tests fail when the lists drift apart, when this machine lacks a package or has
another major version of one (a newer point or security release is reported, not a failure:
``reallymuted.debian`` says why), and when a rule's code imports a package its conda
environment does not pin.
"""

from __future__ import annotations

import re
import sys
from importlib import metadata
from pathlib import Path

import pytest
import yaml
from conftest import workflow_rules

from reallymuted import codegraph, debian
from reallymuted.debian import APT_LISTS, read_package_list

REPO = Path(__file__).resolve().parents[1]
ENVS = sorted((REPO / "envs").glob("*.yaml"))


def normalise(name: str) -> str:
    """PEP 503 name: `PyYAML` and `pyyaml`, `scikit_learn` and `scikit-learn` are one."""
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement_pins() -> dict[str, str]:
    pins = {}
    for line in (REPO / "requirements.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, sep, version = line.partition("==")
            assert sep, f"requirements.txt: {line!r} is not pinned with =="
            pins[normalise(name)] = version
    return pins


def env_pins(path: Path) -> tuple[dict[str, str], list[str]]:
    """(pip pins, conda dependencies) of a conda environment file."""
    env = yaml.safe_load(path.read_text())
    pins: dict[str, str] = {}
    conda: list[str] = []
    for dep in env["dependencies"]:
        if isinstance(dep, dict):
            for line in dep.get("pip", []):
                name, sep, version = line.partition("==")
                assert sep, f"{path.name}: pip entry {line!r} is not pinned with =="
                pins[normalise(name)] = version
        else:
            conda.append(dep)
    return pins, conda


# --- pip and conda ------------------------------------------------------------------------


@pytest.mark.parametrize("env", ENVS, ids=lambda p: p.name)
def test_conda_env_pins_match_requirements(env: Path) -> None:
    pins, conda = env_pins(env)
    required = requirement_pins()
    assert pins, f"{env.name} pins no pip package"
    unknown = sorted(set(pins) - set(required))
    assert not unknown, f"{env.name} pins packages requirements.txt does not: {unknown}"
    differ = {n: (v, required[n]) for n, v in pins.items() if required[n] != v}
    assert not differ, f"{env.name} vs requirements.txt (env, requirements): {differ}"
    python = next(d for d in conda if d.startswith("python="))
    assert python == f"python={sys.version_info.major}.{sys.version_info.minor}", (
        f"{env.name} asks for {python}, the venv runs {sys.version.split()[0]}"
    )


def test_venv_matches_requirements() -> None:
    """What `make setup` installed is what requirements.txt pins (no drift by hand)."""
    installed = {normalise(d.metadata["Name"]): d.version for d in metadata.distributions()}
    differ = {
        name: (version, installed.get(name))
        for name, version in requirement_pins().items()
        if installed.get(name) != version
    }
    assert not differ, f"requirements.txt vs the venv (pinned, installed): {differ}"


# --- Debian ----------------------------------------------------------------------------------


def test_apt_lock_names_every_listed_package() -> None:
    listed = [n for name in APT_LISTS for n in read_package_list(REPO / name)]
    assert len(listed) == len(set(listed)), f"a package is listed twice: {sorted(listed)}"
    assert sorted(listed) == sorted(debian.read_lock(REPO / debian.LOCK)), (
        "envs/apt.lock and envs/apt*.txt name different packages; regenerate the lock with "
        "`.venv/bin/python -m reallymuted.debian lock > envs/apt.lock`"
    )


def on_debian() -> None:
    if sys.platform != "linux" or not Path("/usr/bin/dpkg-query").exists():
        pytest.skip("not a Debian machine")


def test_installed_debian_packages_are_the_locked_major_versions() -> None:
    """Every `make setup` package installed, each at the locked major version; the cluster's
    packages are checked when installed (scripts/slurm-cluster.sh installs them on first use).
    Another point or security release of the same major is drift: listed, not a failure."""
    on_debian()
    states = debian.package_states(REPO)
    failing = [s.describe() for s in states if s.fails]
    assert not failing, (
        "\n".join(debian.report(states)) + "\nafter a deliberate upgrade, regenerate the lock: "
        "`.venv/bin/python -m reallymuted.debian lock > envs/apt.lock`"
    )


def test_a_security_release_is_drift_and_a_new_major_or_a_missing_package_fails() -> None:
    """The policy on versions Debian really ships (dpkg's own ordering decides newer/older)."""
    on_debian()
    installed = {
        "chromium": "156.0.8078.114-1~deb12u1",  # a security build of the locked 156.0.8078.79
        "tshark": "4.0.11-1~deb12u1",  # an older point release of the same series
        "pulseaudio": "17.0+dfsg1-2",  # the next upstream series
        "slurmd": "22.05.8-4+deb12u3",
    }
    lock = {
        "chromium": "156.0.8078.79-1~deb12u1",
        "tshark": "4.0.17-0+deb12u3",
        "pulseaudio": "16.1+dfsg1-2+b1",
        "sox": "14.4.2+git20190427-3.5",
        "slurmd": "22.05.8-4+deb12u3",
        "munge": "0.5.15-2+deb12u1",
    }
    states = {
        name: debian.PackageState(name, version, installed.get(name), name != "munge")
        for name, version in lock.items()
    }
    status = {name: (s.status, s.fails) for name, s in states.items()}
    assert status == {
        "chromium": (debian.NEWER, False),
        "tshark": (debian.OLDER, False),
        "pulseaudio": (debian.MAJOR, True),
        "sox": (debian.MISSING, True),
        "slurmd": (debian.SAME, False),
        "munge": (debian.MISSING, False),  # a cluster package: installed on first use
    }
    assert debian.major("1:2.3.4-1") == "1:2" and debian.major("22.05.8-4+deb12u3") == "22"
    lines = debian.report(list(states.values()))
    assert lines[0].endswith("1 of 6 as locked"), lines
    assert any(line.startswith("  note: chromium: newer") for line in lines), lines
    assert any(line.startswith("  FAIL: pulseaudio: another major") for line in lines), lines
    assert [s["package"] for s in debian.drift(list(states.values()))] == [
        "chromium",
        "tshark",
        "pulseaudio",
        "sox",
        "munge",
    ]


def test_programs_the_testbed_calls_come_from_listed_packages() -> None:
    """Each program a driver or the session runner needs belongs to a package of apt.txt."""
    on_debian()
    import shutil
    import subprocess

    from reallymuted.testbed.drivers import get_driver

    listed = set(read_package_list(REPO / "envs/apt.txt"))
    programs = {"ip", "pulseaudio", "pactl", "dumpcap", "tshark"}
    for driver in ("control", "chromium", "baresip", "linphone"):
        programs |= set(get_driver(driver).programs)
    unlisted = {}
    for program in sorted(programs):
        path = shutil.which(program)
        assert path, f"{program} is not installed (run `make setup`)"
        owner = subprocess.run(
            ["dpkg", "-S", str(Path(path).resolve())], capture_output=True, text=True
        )
        owners = {o.strip() for o in owner.stdout.split(":", 1)[0].split(",")}
        if owner.returncode == 0 and not owners & listed:
            # A dependency of a listed package (dumpcap: wireshark-common of tshark) is fine.
            depends = subprocess.run(
                ["apt-cache", "rdepends", "--installed", *owners], capture_output=True, text=True
            ).stdout
            if not any(f" {name}\n" in depends + "\n" for name in listed):
                unlisted[program] = sorted(owners)
    assert not unlisted, f"programs from packages missing in envs/apt.txt: {unlisted}"


def test_playwrights_node_driver_runs() -> None:
    """Playwright drives Chromium through a Node.js binary of its own, whose shared libraries
    (libatomic) a minimal Debian lacks: seen only on a first install, as 'Connection closed
    while reading from the driver' in every browser session."""
    import subprocess

    from playwright._impl._driver import compute_driver_executable

    node, cli = compute_driver_executable()
    run = subprocess.run([node, cli, "--version"], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.startswith("Version "), run.stdout


# --- rules and their conda environments ------------------------------------------------------


def test_every_rule_that_runs_code_has_a_conda_env() -> None:
    found = workflow_rules()
    assert {"session", "claims", "classifier_window"} <= set(found), sorted(found)
    missing = sorted(n for n, r in found.items() if not r["norun"] and not r["conda"])
    assert not missing, f"rules without `conda:` (so --sdm conda cannot run them): {missing}"
    for name, rule in found.items():
        if rule["conda"]:
            env = (REPO / "workflow/rules" / rule["conda"]).resolve()
            assert env.is_file(), f"rule {name}: conda env {rule['conda']} does not exist"


def imported_distributions(script: Path) -> dict[str, set[str]]:
    """Third-party distributions a script imports, following the package's own modules
    (``reallymuted.*``) transitively, as the rules' code inputs do; value: the modules that
    import it."""
    distributions = metadata.packages_distributions()
    used: dict[str, set[str]] = {}
    for path in [script, *map(Path, codegraph.code_files(script))]:
        if path.suffix != ".py":
            continue
        for name in codegraph.imported_names(path):
            top = name.split(".")[0]
            if top not in ("reallymuted", "snakemake") and top not in sys.stdlib_module_names:
                for dist in distributions.get(top, [top]):
                    used.setdefault(normalise(dist), set()).add(path.name)
    return used


def test_each_rules_env_pins_what_its_code_imports() -> None:
    """Under --sdm conda a rule runs in its env alone: everything its script imports (also
    lazily, inside functions: threadpoolctl, scipy are imported that way and used) must be
    pinned there. `snakemake` itself is put on the script's path by Snakemake."""
    problems = []
    for name, rule in sorted(workflow_rules().items()):
        if not rule["script"] or not rule["conda"]:
            continue
        script = (REPO / "workflow/rules" / rule["script"]).resolve()
        env = (REPO / "workflow/rules" / rule["conda"]).resolve()
        pins, _ = env_pins(env)
        for dist, where in sorted(imported_distributions(script).items()):
            if dist not in pins:
                problems.append(f"rule {name} ({env.name}): {dist} imported by {sorted(where)}")
    assert not problems, "not pinned in the rule's conda env:\n  " + "\n  ".join(problems)
