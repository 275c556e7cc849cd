"""The official globus-sdk's experimental GCSDownloader, unmodified, reading files from the
emulator's HTTPS on collections: it sniffs the collection id from the 302, asks Transfer
whether `data_access` is needed, gets a token for the collection and GETs the file."""

import globus_sdk
import pytest
from globus_sdk.experimental.gcs_downloader import GCSDownloader

from conftest import CLIENT_ID, CLIENT_SECRET


def client_app(emulator, monkeypatch):
    for key, value in emulator.env().items():
        if key.startswith("GLOBUS_SDK_"):
            monkeypatch.setenv(key, value)
    config = globus_sdk.GlobusAppConfig(token_storage="memory")
    return globus_sdk.ClientApp(
        "ps-globus compat", client_id=CLIENT_ID, client_secret=CLIENT_SECRET, config=config
    )


@pytest.mark.parametrize("mapped", [False, True], ids=["guest-like", "mapped-needs-data-access"])
def test_the_sdks_downloader_reads_a_file_over_https(make_emulator, monkeypatch, mapped):
    emulator = make_emulator(b_settings="requires_data_access = true" if mapped else "")
    (emulator.b / "run").mkdir()
    payload = bytes(range(256)) * 40
    (emulator.b / "run" / "x.bin").write_bytes(payload)
    origin = emulator.https["b"]
    assert origin.startswith("http://127.0.0.1:")
    with GCSDownloader(client_app(emulator, monkeypatch)) as downloader:
        assert downloader.read_file(f"{origin}/run/x.bin", as_text=False) == payload
        # The second read reuses the client and its token: no second sniff.
        assert downloader.read_file(f"{origin}/run/x.bin", as_text=False) == payload
    stats = emulator.stats()
    assert stats["by_route"]["HTTPS GET"] == 3, stats["by_route"]
    assert stats["https_requests"] == 3


def test_a_collection_without_https_publishes_none(make_emulator, monkeypatch):
    emulator = make_emulator(b_settings="disable_https = true")
    assert emulator.https["b"] is None
    for key, value in emulator.env().items():
        if key.startswith("GLOBUS_SDK_"):
            monkeypatch.setenv(key, value)
    auth = globus_sdk.ConfidentialAppAuthClient(CLIENT_ID, CLIENT_SECRET)
    transfer = globus_sdk.TransferClient(
        authorizer=globus_sdk.ClientCredentialsAuthorizer(auth, globus_sdk.TransferClient.scopes.all)
    )
    assert transfer.get_endpoint(emulator.ids["b"])["https_server"] is None
    assert transfer.get_endpoint(emulator.ids["a"])["https_server"] == emulator.https["a"]
