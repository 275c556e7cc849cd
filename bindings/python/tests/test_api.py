"""ps_globus's own API: staging as calls, and named references across sites."""

from __future__ import annotations

from pathlib import Path

import pytest

import ps_globus
from conftest import run_at
from ps_globus.errors import InvalidInput, NotFound, PsGlobusError, TransferFailed
from ps_globus.proxystore import GlobusConnector
from ps_globus.testing import Emulator, emulator


def site_dir(emu: Emulator, site: str) -> Path:
    return Path(emu.sites[site]['local_path'])


def test_stage_out_then_stage_in_round_trips_a_directory_and_a_file(emu: Emulator) -> None:
    inputs = site_dir(emu, 'a') / 'inputs'
    (inputs / 'deep').mkdir(parents=True)
    (inputs / 'one.dat').write_bytes(b'1' * 1000)
    (inputs / 'deep' / 'two.dat').write_bytes(b'2' * 2000)
    report = ps_globus.stage_out(inputs, 'b:/copied', recursive=True, label='stage-out-test')
    assert report.ok and len(report.task_ids) == 1
    assert (site_dir(emu, 'b') / 'copied' / 'deep' / 'two.dat').read_bytes() == b'2' * 2000
    back = site_dir(emu, 'a') / 'back.dat'
    report = ps_globus.stage_in('b:/copied/one.dat', back, sync_level='checksum')
    assert report.ok and [i.state for i in report.items] == ['SUCCEEDED']
    assert back.read_bytes() == b'1' * 1000


def test_a_batch_of_files_travels_in_one_task(emu: Emulator) -> None:
    for n in range(5):
        (site_dir(emu, 'a') / f'f{n}').write_bytes(bytes([n]) * 10)
    report = ps_globus.transfer(batch=[(f'a:/f{n}', f'b:/batch/f{n}') for n in range(5)])
    assert len(report.task_ids) == 1 and len(report.items) == 5 and report.ok
    assert sorted(p.name for p in (site_dir(emu, 'b') / 'batch').iterdir()) == [f'f{n}' for n in range(5)]


def test_a_copy_onto_itself_is_refused_before_anything_is_submitted(emu: Emulator) -> None:
    (site_dir(emu, 'a') / 'precious').write_bytes(b'keep me')
    with pytest.raises(InvalidInput, match='both the source and the destination'):
        ps_globus.transfer('a:/precious', 'a:/precious')
    with pytest.raises(InvalidInput, match='must be a local path'):
        ps_globus.stage_in('a:/precious', 'b:/elsewhere')
    with pytest.raises(InvalidInput, match='does not exist here'):
        ps_globus.stage_out(site_dir(emu, 'a') / 'missing', 'b:/x')
    with pytest.raises(InvalidInput, match='sync_level'):
        ps_globus.transfer('a:/precious', 'b:/x', sync_level='newer')
    with pytest.raises(InvalidInput, match='not a time'):
        ps_globus.transfer('a:/precious', 'b:/x', deadline='tomorrow')
    with pytest.raises(ValueError, match='timeout'):
        ps_globus.transfer('a:/precious', 'b:/x', timeout=-1)
    assert emu.transfer_tasks() == 0
    assert (site_dir(emu, 'a') / 'precious').read_bytes() == b'keep me'


def test_a_failed_item_raises_transfer_failed_with_the_whole_report(tmp_path: Path) -> None:
    with emulator(home=tmp_path / 'emu', faults=[{'kind': 'file_not_found', 'path': '/gone/*'}]) as emu:
        emu.activate('a')
        (site_dir(emu, 'a') / 'gone').mkdir()
        (site_dir(emu, 'a') / 'gone' / 'x').write_bytes(b'x')
        (site_dir(emu, 'a') / 'fine').write_bytes(b'fine')
        with pytest.raises(TransferFailed) as failed:
            ps_globus.transfer(batch=[('a:/gone/x', 'b:/x'), ('a:/fine', 'b:/fine')], sync_level=None)
        report = failed.value.report
        assert failed.value.code == 'FILE_NOT_FOUND'
        assert sorted(i.state for i in report.items) == ['FAILED', 'SUCCEEDED']
        unchecked = ps_globus.transfer('a:/gone/x', 'b:/y', check=False)
        assert not unchecked.ok and unchecked.failed[0].code == 'FILE_NOT_FOUND'


def test_no_wait_returns_the_task_ids_at_once(emu: Emulator) -> None:
    (site_dir(emu, 'a') / 'later').write_bytes(b'later')
    report = ps_globus.transfer('a:/later', 'b:/later', wait=False)
    assert len(report.task_ids) == 1
    assert [i.task_id for i in report.items] == report.task_ids


def test_a_named_reference_made_at_a_resolves_at_b_after_export_and_import(emu: Emulator) -> None:
    connector = GlobusConnector('refs')
    source = site_dir(emu, 'a') / 'genome.fa'
    source.write_bytes(b'ACGT' * 1000)
    key = connector.put_file(source)
    text = ps_globus.save_reference('genome', key, connector)
    assert text.startswith('psgref1.')
    with pytest.raises(PsGlobusError):
        ps_globus.save_reference('genome', key, connector)  # taken
    ps_globus.save_reference('genome', key, connector, replace=True)
    loaded = ps_globus.load_reference('genome')
    assert loaded.key == key.key and loaded.to_string() == text
    assert [r.name for r in ps_globus.list_references()] == ['genome']
    done = run_at(
        emu,
        'b',
        f"""
        import ps_globus
        ref = ps_globus.import_reference({text!r}, name='their-genome')
        print(open(ref.resolve_path(), 'rb').read() == b'ACGT' * 1000)
        print([r.name for r in ps_globus.list_references()])
        """,
    )
    assert done.stdout.decode().split('\n')[:2] == ['True', "['their-genome']"]
    assert ps_globus.remove_reference('genome') is True
    assert ps_globus.remove_reference('genome') is False
    with pytest.raises(NotFound):
        ps_globus.load_reference('genome')
