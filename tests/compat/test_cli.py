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


def ps_globus(emulator, home, *args, timeout=120):
    env = emulator.env()
    env.update(
        PS_GLOBUS_TRANSFER_URL=emulator.url,
        PS_GLOBUS_AUTH_URL=emulator.url,
        PS_GLOBUS_CLIENT_ID=CLIENT_ID,
        PS_GLOBUS_CLIENT_SECRET=CLIENT_SECRET,
        PS_GLOBUS_HOME=str(home / "ps-globus"),
        PS_GLOBUS_CONFIG=str(home / "ps-globus.toml"),
        HOME=str(home),
    )
    return subprocess.run([os.environ["PS_GLOBUS_BIN"], *args], env=env, capture_output=True, text=True, timeout=timeout)


def without_ids(text):
    import re

    return re.sub(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", "<id>", text)


def test_scripting_parity_with_globus_cli(emulator, tmp_path):
    """The same command lines through globus-cli and ps-globus print the same, ids aside:
    a script written for one works with the other."""
    a, b = emulator.ids["a"], emulator.ids["b"]
    for name in ("one", "two"):
        (emulator.a / f"{name}.txt").write_text(name)

    def both(*args, to=None):
        # Each tool copies to a destination of its own: identical paths in flight are refused.
        theirs = globus(emulator, tmp_path, *[x.replace("{to}", "g") for x in args])
        ours = ps_globus(emulator, tmp_path, *[x.replace("{to}", "p") for x in args])
        return theirs, ours

    same_output = [
        # `task_id="$(… transfer … --jmespath task_id --format=UNIX)"`, any case.
        ("transfer", f"{a}:/one.txt", f"{b}:/{{to}}/one.txt", "--label", "Parity Run", "--jmespath", "task_id", "--format=UNIX"),
        ("transfer", f"{a}:/two.txt", f"{b}:/{{to}}/two.txt", "--label", "parity-two", "-F", "json", "--jq", "[DATA_TYPE, code, task_id]"),
        ("transfer", f"{a}:/one.txt", f"{b}:/{{to}}/again.txt", "-F", "unix", "--jmespath", "[submission_id, task_id]"),
    ]
    task_ids = {}
    for args in same_output:
        theirs, ours = both(*args)
        assert theirs.returncode == 0, theirs.stderr
        assert ours.returncode == 0, ours.stderr
        assert without_ids(ours.stdout) == without_ids(theirs.stdout), (args, theirs.stdout, ours.stdout)
        task_ids.setdefault("ours", ours.stdout.split()[-1])
    for task_id in [t for t in json.loads(globus(emulator, tmp_path, "task", "list", "-F", "json", "--jmespath", "DATA[].task_id").stdout)]:
        assert globus(emulator, tmp_path, "task", "wait", task_id, "--timeout", "60").returncode == 0

    # A selection that finds nothing prints what globus-cli prints; on `transfer`,
    # ps-globus also exits 1 (a script would take `None` for a task id).
    theirs, ours = both("transfer", f"{a}:/one.txt", f"{b}:/{{to}}/none.txt", "--jmespath", "no_such_field", "-F", "unix")
    assert (theirs.stdout, ours.stdout) == ("None\n", "None\n"), (theirs, ours)
    assert ours.returncode == 1 and "selected nothing" in ours.stderr, ours.stderr

    listings = [
        ("task", "list", "-F", "unix", "--jmespath", "DATA[].[type, status, label]"),
        ("task", "list", "-F", "unix", "--filter-label", "*PARITY*", "--jmespath", "DATA[].label"),
        ("task", "list", "-F", "unix", "--filter-label", "parity-two", "--exact", "--jq", "DATA[].label"),
        ("task", "list", "-F", "unix", "--filter-not-label", "parity-two", "--exact", "--jq", "DATA[].label"),
        ("task", "list", "-F", "json", "--filter-status", "SUCCEEDED", "--filter-type", "TRANSFER", "--limit", "2", "--jmespath", "DATA[].status"),
        ("task", "list", "-F", "unix", "--filter-requested-after", "2000-01-01", "--filter-completed-before", "2999-12-31 23:59:59", "--jmespath", "DATA[].[status]"),
        ("task", "list", "-F", "unix", "--filter-requested-before", "2000-01-01", "--jmespath", "DATA[].task_id"),
        ("task", "list", "-F", "unix", "--jmespath", "{ids: DATA[].task_id, n: length(DATA)}"),
        ("task", "show", task_ids["ours"], "-F", "unix", "--jmespath", "[status, type, label, files]"),
    ]
    for args in listings:
        theirs, ours = both(*args)
        assert theirs.returncode == 0, (args, theirs.stderr)
        assert ours.returncode == 0, (args, ours.stderr)
        assert without_ids(ours.stdout) == without_ids(theirs.stdout), (args, theirs.stdout, ours.stdout)
