"""The official globus-sdk TransferClient, unmodified, against the emulator."""

import uuid

import globus_sdk
import pytest

from conftest import CLIENT_ID, CLIENT_SECRET


@pytest.fixture
def client(emulator, monkeypatch):
    return transfer_client(emulator, monkeypatch)


def transfer_client(emulator, monkeypatch):
    for key, value in emulator.env().items():
        if key.startswith("GLOBUS_SDK_"):
            monkeypatch.setenv(key, value)
    auth = globus_sdk.ConfidentialAppAuthClient(CLIENT_ID, CLIENT_SECRET)
    authorizer = globus_sdk.ClientCredentialsAuthorizer(auth, globus_sdk.TransferClient.scopes.all)
    return globus_sdk.TransferClient(authorizer=authorizer)


def test_submit_wait_and_inspect(emulator, client):
    (emulator.a / "data").mkdir()
    (emulator.a / "data" / "x.txt").write_bytes(b"hello from the sdk")
    (emulator.a / "data" / "y.txt").write_bytes(b"second")
    a, b = emulator.ids["a"], emulator.ids["b"]
    tdata = globus_sdk.TransferData(a, b, label="sdk compat", sync_level="checksum", verify_checksum=True)
    tdata.add_item("/~/data/x.txt", "/~/out/x.txt")
    tdata.add_item("/data", "/tree", recursive=True)
    submitted = client.submit_transfer(tdata)
    assert submitted["code"] == "Accepted"
    task_id = submitted["task_id"]
    assert client.task_wait(task_id, timeout=60, polling_interval=1)
    task = client.get_task(task_id)
    assert task["status"] == "SUCCEEDED"
    assert task["files_transferred"] == 3
    assert (emulator.b / "out" / "x.txt").read_bytes() == b"hello from the sdk"
    assert (emulator.b / "tree" / "y.txt").read_bytes() == b"second"

    listed = [t["task_id"] for t in client.task_list(filter="label:=sdk compat/status:SUCCEEDED")]
    assert listed == [task_id]
    codes = [e["code"] for e in client.task_event_list(task_id)]
    assert codes[0] == "SUCCEEDED" and "STARTED" in codes
    done = sorted(t["destination_path"] for t in client.task_successful_transfers(task_id))
    assert done == ["/out/x.txt", "/tree/x.txt", "/tree/y.txt"]

    # Submitting the same document again (same submission id) is not a second task.
    again = client.submit_transfer(tdata)
    assert again["code"] == "Duplicate" and again["task_id"] == task_id


def test_file_operations_and_delete(emulator, client):
    a = emulator.ids["a"]
    (emulator.a / "f.txt").write_bytes(b"12345")
    client.operation_mkdir(a, "/~/newdir")
    client.operation_rename(a, "/~/f.txt", "/~/newdir/g.txt")
    names = [entry["name"] for entry in client.operation_ls(a, path="/~/newdir/")]
    assert names == ["g.txt"]
    assert client.operation_stat(a, "/~/newdir/g.txt")["size"] == 5
    ddata = globus_sdk.DeleteData(a, recursive=True)
    ddata.add_item("/~/newdir")
    task_id = client.submit_delete(ddata)["task_id"]
    assert client.task_wait(task_id, timeout=60, polling_interval=1)
    assert client.get_task(task_id)["status"] == "SUCCEEDED"
    assert not (emulator.a / "newdir").exists()
    endpoint = client.get_endpoint(a)
    assert endpoint["entity_type"] == "GCP_mapped_collection"
    found = [e["id"] for e in client.endpoint_search("b", filter_scope="my-endpoints")]
    assert found == [emulator.ids["b"]]


def test_errors_are_transfer_api_errors_with_the_right_codes(emulator, client):
    a, b = emulator.ids["a"], emulator.ids["b"]
    with pytest.raises(globus_sdk.TransferAPIError) as info:
        client.get_task(str(uuid.uuid4()))
    assert (info.value.http_status, info.value.code) == (404, "TaskNotFound")
    with pytest.raises(globus_sdk.TransferAPIError) as info:
        client.operation_ls(a, path="/missing/")
    assert (info.value.http_status, info.value.code) == (404, "ClientError.NotFound")
    with pytest.raises(globus_sdk.TransferAPIError) as info:
        client.operation_stat(a, "/missing")
    assert info.value.code == "NotFound"
    client.operation_mkdir(a, "/dup")
    with pytest.raises(globus_sdk.TransferAPIError) as info:
        client.operation_mkdir(a, "/dup")
    assert (info.value.http_status, info.value.code) == (502, "ExternalError.MkdirFailed.Exists")
    # ExternalError is never retried by the SDK: one request only.
    assert emulator.stats()["by_route"]["POST /v0.10/operation/endpoint/{id}/mkdir"] == 2
    with pytest.raises(globus_sdk.TransferAPIError) as info:
        client.submit_transfer(globus_sdk.TransferData(a, b))
    assert info.value.code == "ClientError.BadRequest.NoTransferItems"
    tdata = globus_sdk.TransferData(a, str(uuid.uuid4()))
    tdata.add_item("/x", "/y")
    with pytest.raises(globus_sdk.TransferAPIError) as info:
        client.submit_transfer(tdata)
    assert (info.value.http_status, info.value.code) == (404, "EndpointNotFound")


def test_cancel(make_emulator, monkeypatch):
    emulator = make_emulator(settings="task_latency_ms = 600000")
    client = transfer_client(emulator, monkeypatch)
    (emulator.a / "f").write_bytes(b"x")
    tdata = globus_sdk.TransferData(emulator.ids["a"], emulator.ids["b"])
    tdata.add_item("/f", "/f")
    task_id = client.submit_transfer(tdata)["task_id"]
    assert not client.task_wait(task_id, timeout=1, polling_interval=1)
    result = client.cancel_task(task_id)
    assert result["code"] == "Canceled" and result["message"]
    task = client.get_task(task_id)
    assert task["status"] == "FAILED" and task["fatal_error"]["code"] == "CANCELED"


def test_the_sdk_retries_429_and_503_transparently(make_emulator, monkeypatch):
    tables = """
[[faults]]
kind = "http_429"
route = "GET /v0.10/task_list"
count = 2
retry_after = 1
[[faults]]
kind = "http_503"
route = "GET /v0.10/endpoint/{id}"
count = 1
retry_after = 1
"""
    emulator = make_emulator(tables=tables)
    client = transfer_client(emulator, monkeypatch)
    assert list(client.task_list()) == []
    assert client.get_endpoint(emulator.ids["a"])["id"] == emulator.ids["a"]
    stats = emulator.stats()
    assert stats["responses_429"] == 2 and stats["responses_503"] == 1


def test_consent_required(make_emulator, monkeypatch):
    emulator = make_emulator(b_settings="requires_data_access = true")
    plain = transfer_client(emulator, monkeypatch)
    guarded = emulator.ids["b"]
    assert plain.get_endpoint(guarded)["entity_type"] == "GCSv5_mapped_collection"
    with pytest.raises(globus_sdk.TransferAPIError) as info:
        plain.operation_ls(guarded, path="/")
    assert (info.value.http_status, info.value.code) == (403, "ConsentRequired")
    assert info.value.info.consent_required
    scopes = info.value.info.consent_required.required_scopes
    assert any(f"{guarded}/data_access" in s for s in scopes)
    auth = globus_sdk.ConfidentialAppAuthClient(CLIENT_ID, CLIENT_SECRET)
    consented = globus_sdk.TransferClient(authorizer=globus_sdk.ClientCredentialsAuthorizer(auth, scopes))
    assert list(consented.operation_ls(guarded, path="/")) == []
