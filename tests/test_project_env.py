"""The README's two commands install into the project's own environment, whatever Python the machine has."""

import os
import re
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
README = open(os.path.join(ROOT, "README.md"), encoding="utf-8").read()


def test_ci_runs_exactly_the_readmes_test_command():
    commands = re.search(r"```bash\n(make demo.*?)\n(make test.*?)\n```", README)
    assert commands, "README's two commands block not found"
    test_command = commands.group(2).split("#")[0].strip()
    ci = open(os.path.join(ROOT, ".ci", "run"), encoding="utf-8").read()
    assert [line for line in ci.splitlines() if line.strip() and not line.startswith(("#", "set ", "cd "))] == [
        test_command]


@pytest.mark.parametrize("target", ["test", "demo"])
def test_make_installs_and_runs_inside_the_project_environment(target):
    """Everything runs in .venv; `make test` also in .venv-lowest (the lowest declared versions), both overridable."""
    dry_run = subprocess.run(["make", "-n", target, "VENV=/tmp/some-env", "LOWEST_VENV=/tmp/lowest-env"], cwd=ROOT,
                             capture_output=True, text=True)
    assert dry_run.returncode == 0, dry_run.stderr
    lines = [line for line in dry_run.stdout.splitlines() if "pip install" in line or "sasa.cli" in line
             or "pytest" in line]
    environments = ["/tmp/some-env/bin/python"] + (["/tmp/lowest-env/bin/python"] if target == "test" else [])
    assert lines and all(any(env in line for env in environments) for line in lines), dry_run.stdout
    assert all(any(env in line for line in lines) for env in environments), dry_run.stdout
    if target == "test":
        lowest = [line for line in lines if "/tmp/lowest-env/bin/python" in line]
        assert all("-c " in line for line in lowest if "pip install" in line), lowest  # the lowest-versions pins


def test_lowest_constraints_pin_every_declared_dependency_at_its_lower_bound(tmp_path):
    script = os.path.join(ROOT, "scripts", "lowest-constraints")
    pins = subprocess.run([sys.executable, script], capture_output=True, text=True, check=True).stdout.split()
    assert "torch==2.13" in pins and "transformers==5.6" in pins and len(pins) >= 20, pins
    assert all(re.fullmatch(r"[A-Za-z0-9._-]+==[0-9][A-Za-z0-9.]*", pin) for pin in pins), pins
    unbounded = tmp_path / "setup.cfg"
    unbounded.write_text("[options]\ninstall_requires =\n    torch>=2.13\n    numpy\n"
                         "[options.extras_require]\ntest =\n    pytest>=7.4\n")
    refused = subprocess.run([sys.executable, script, str(unbounded)], capture_output=True, text=True)
    assert refused.returncode != 0 and "'numpy'" in refused.stderr and "no lower bound" in refused.stderr


@pytest.mark.slow
def test_project_python_creates_an_environment_once_and_reuses_it(tmp_path):
    """From the running interpreter (CI's or a developer's): a new environment with pip, outside the base Python."""
    script = os.path.join(ROOT, "scripts", "project-python")
    target = tmp_path / "env"
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    first = subprocess.run([script, sys.executable, str(target)], capture_output=True, text=True, env=env, timeout=300)
    assert first.returncode == 0, first.stderr
    python = first.stdout.strip()
    assert python == str(target / "bin" / "python")
    assert "creating the project environment" in first.stderr
    pip = subprocess.run([python, "-m", "pip", "--version"], capture_output=True, text=True)
    assert pip.returncode == 0 and str(target) in pip.stdout
    again = subprocess.run([script, sys.executable, str(target)], capture_output=True, text=True, env=env)
    assert again.returncode == 0 and again.stdout.strip() == python and again.stderr == ""


def test_project_python_refuses_an_old_or_missing_python(tmp_path):
    script = os.path.join(ROOT, "scripts", "project-python")
    missing = subprocess.run([script, str(tmp_path / "no-python"), str(tmp_path / "env")], capture_output=True,
                             text=True)
    assert missing.returncode == 1 and "no Python found" in missing.stderr
    old = tmp_path / "python2"
    old.write_text("#!/bin/sh\nexit 1\n")  # a Python whose version check fails, as one older than 3.10 would
    old.chmod(0o755)
    refused = subprocess.run([script, str(old), str(tmp_path / "env")], capture_output=True, text=True)
    assert refused.returncode == 1 and "needs >= 3.10" in refused.stderr
