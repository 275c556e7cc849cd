"""Runs `ps-globus sim serve` for the compatibility tests (official globus-sdk and globus-cli).

The binary comes from $PS_GLOBUS_BIN (scripts/test sets it). Each test gets a fresh
emulator with two collections, `a` and `b`, in temporary directories, and one
confidential client for client-credentials logins.
"""

import json
import os
import subprocess
import uuid

import pytest

CLIENT_ID = str(uuid.uuid5(uuid.NAMESPACE_URL, "ps-globus-compat-client"))
CLIENT_SECRET = "compat-client-secret"


class Emulator:
    def __init__(self, tmp_path, settings="", tables="", b_settings=""):
        self.a = tmp_path / "a"
        self.b = tmp_path / "b"
        self.a.mkdir()
        self.b.mkdir()
        config = tmp_path / "sim.toml"
        config.write_text(
            f"fault_retry_ms = 20\n{settings}\n"
            f'[clients]\n"{CLIENT_ID}" = "{CLIENT_SECRET}"\n'
            f'[collections.a]\nroot = "{self.a}"\n'
            f'[collections.b]\nroot = "{self.b}"\n{b_settings}\n{tables}\n'
        )
        self.log = open(tmp_path / "sim.log", "w")
        self.proc = subprocess.Popen(
            [os.environ["PS_GLOBUS_BIN"], "sim", "serve", "--config", str(config)],
            stdout=subprocess.PIPE,
            stderr=self.log,
            text=True,
        )
        info = json.loads(self.proc.stdout.readline())
        assert info["transfer_url"].endswith("/") and info["auth_url"].endswith("/")
        self.url = info["transfer_url"]
        self.ids = {name: c["id"] for name, c in info["collections"].items()}
        self.https = {name: c["https_server"] for name, c in info["collections"].items()}

    def env(self):
        env = dict(os.environ)
        env.pop("GLOBUS_SDK_ENVIRONMENT", None)
        env["GLOBUS_SDK_SERVICE_URL_TRANSFER"] = self.url
        env["GLOBUS_SDK_SERVICE_URL_AUTH"] = self.url
        return env

    def stats(self):
        import urllib.request

        with urllib.request.urlopen(self.url + "__sim/stats") as response:
            return json.load(response)

    def stop(self):
        self.proc.terminate()
        assert self.proc.wait(timeout=20) == 0, "the emulator exits cleanly on SIGTERM"
        self.log.close()


@pytest.fixture
def make_emulator(tmp_path_factory):
    started = []

    def make(settings="", tables="", b_settings=""):
        emulator = Emulator(tmp_path_factory.mktemp("sim"), settings, tables, b_settings)
        started.append(emulator)
        return emulator

    yield make
    for emulator in started:
        emulator.stop()


@pytest.fixture
def emulator(make_emulator):
    return make_emulator()
