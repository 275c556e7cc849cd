"""The official globus-cli, unmodified, in client-credentials mode, against the emulator."""

import json
import os
import subprocess
import sys

from conftest import CLIENT_ID, CLIENT_SECRET

GLOBUS = os.path.join(os.path.dirname(sys.executable), "globus")


def globus(emulator, home, *args, timeout=120):
    env = emulator.env()
    env.update(GLOBUS_CLI_CLIENT_ID=CLIENT_ID, GLOBUS_CLI_CLIENT_SECRET=CLIENT_SECRET, HOME=str(home))
    env.pop("SSH_TTY", None)
    env.pop("SSH_CONNECTION", None)
    return subprocess.run([GLOBUS, *args], env=env, capture_output=True, text=True, timeout=timeout)


def test_ls_transfer_wait_show(emulator, tmp_path):
    a, b = emulator.ids["a"], emulator.ids["b"]
    (emulator.a / "src").mkdir()
    (emulator.a / "src" / "one.txt").write_text("one")
    (emulator.a / "src" / "two.txt").write_text("two")

    listed = globus(emulator, tmp_path, "ls", f"{a}:/src/")
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.split() == ["one.txt", "two.txt"]

    submitted = globus(emulator, tmp_path, "transfer", f"{a}:/src/", f"{b}:/dst/", "--recursive", "--label", "cli compat", "-F", "json")
    assert submitted.returncode == 0, submitted.stderr
    task_id = json.loads(submitted.stdout)["task_id"]
    waited = globus(emulator, tmp_path, "task", "wait", task_id, "--timeout", "60")
    assert waited.returncode == 0, waited.stderr
    shown = globus(emulator, tmp_path, "task", "show", task_id, "-F", "json")
    assert shown.returncode == 0, shown.stderr
    task = json.loads(shown.stdout)
    assert task["status"] == "SUCCEEDED" and task["label"] == "cli compat"
    assert (emulator.b / "dst" / "two.txt").read_text() == "two"
    text = globus(emulator, tmp_path, "task", "show", task_id)
    assert "SUCCEEDED" in text.stdout and task_id in text.stdout


def test_task_wait_exits_1_when_the_task_fails(make_emulator, tmp_path):
    emulator = make_emulator(
        settings="checksum_retries = 0",
        tables='[[faults]]\nkind = "checksum_mismatch"\npath = "/bad*"\n',
    )
    a, b = emulator.ids["a"], emulator.ids["b"]
    (emulator.a / "bad.bin").write_bytes(b"corrupted on arrival")
    submitted = globus(emulator, tmp_path, "transfer", f"{a}:/bad.bin", f"{b}:/bad.bin", "-F", "json")
    assert submitted.returncode == 0, submitted.stderr
    task_id = json.loads(submitted.stdout)["task_id"]
    waited = globus(emulator, tmp_path, "task", "wait", task_id, "--timeout", "60")
    assert waited.returncode == 1
    shown = json.loads(globus(emulator, tmp_path, "task", "show", task_id, "-F", "json").stdout)
    assert shown["status"] == "FAILED" and shown["fatal_error"]["code"] == "CHECKSUM_MISMATCH"


def test_task_wait_times_out_on_a_task_still_running(make_emulator, tmp_path):
    emulator = make_emulator(settings="task_latency_ms = 600000")
    (emulator.a / "f").write_text("f")
    submitted = globus(emulator, tmp_path, "transfer", f"{emulator.ids['a']}:/f", f"{emulator.ids['b']}:/f", "-F", "json")
    task_id = json.loads(submitted.stdout)["task_id"]
    waited = globus(emulator, tmp_path, "task", "wait", task_id, "--timeout", "2", "--timeout-exit-code", "50")
    assert waited.returncode == 50
    cancel = globus(emulator, tmp_path, "task", "cancel", task_id)
    assert cancel.returncode == 0, cancel.stderr
    assert "cancelled successfully" in cancel.stdout


def test_api_errors_exit_1_with_the_code(emulator, tmp_path):
    result = globus(emulator, tmp_path, "ls", f"{emulator.ids['a']}:/missing/")
    assert result.returncode == 1
    assert "ClientError.NotFound" in result.stderr


def test_user_mode_login_whoami_and_logout(emulator, tmp_path):
    """`globus login` in user mode, with curl as the browser: the whole Auth dance."""
    env = emulator.env()
    env.update(HOME=str(tmp_path), BROWSER="curl -s -L -o /dev/null %s")
    for var in ("SSH_TTY", "SSH_CONNECTION", "GLOBUS_CLI_CLIENT_ID", "GLOBUS_CLI_CLIENT_SECRET"):
        env.pop(var, None)

    def run(*args):
        return subprocess.run([GLOBUS, *args], env=env, capture_output=True, text=True, timeout=120)

    login = run("login")
    assert login.returncode == 0, login.stdout + login.stderr
    whoami = run("whoami")
    assert whoami.returncode == 0, whoami.stderr
    assert whoami.stdout.strip() == "user@sim.ps-globus.local"
    (emulator.a / "mine.txt").write_text("mine")
    listed = run("ls", f"{emulator.ids['a']}:/")
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.split() == ["mine.txt"]
    again = run("login")
    assert "already logged in" in again.stdout.lower() + again.stderr.lower()
    logout = run("logout", "--yes")
    assert logout.returncode == 0, logout.stderr
    after = run("whoami")
    assert after.returncode != 0
