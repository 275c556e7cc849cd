"""ProxyStore's own StreamProducer / StreamConsumer on our shims: over Globus itself
(sealed message files, no broker) and over a Redis stream (replayable); forged events
dropped before ProxyStore unpickles them; and ``ps_globus.stream``'s own face."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest
from proxystore.store import Store
from proxystore.stream import StreamConsumer, StreamProducer
from proxystore.stream.protocols import MessagePublisher, MessageSubscriber

from conftest import RedisServer, last_line, run_at, start
from ps_globus.errors import InvalidInput
from ps_globus.proxystore import FileConnector, GlobusConnector, RedisConnector
from ps_globus.stream import (
    Consumer,
    GlobusPublisher,
    GlobusSubscriber,
    Producer,
    RedisStreamPublisher,
    RedisStreamSubscriber,
    create_key_file,
)
from ps_globus.testing import Emulator


class Planted:
    """Unpickling this runs code: it writes the file it names."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (Path(self.marker).write_text, ('owned',))


def forged_message(marker: Path) -> bytes:
    """What a forger can write: the magic bytes, a made-up MAC, and a pickle that runs
    code when ProxyStore's consumer deserializes it."""
    return b'psgm1' + bytes(32) + pickle.dumps(Planted(marker))


#: A consumer at another site: ProxyStore's StreamConsumer over our Globus subscriber,
#: with a filter on the producer's metadata; prints what it got and how many messages
#: were rejected.
GLOBUS_CONSUMER = """
import json
from proxystore.stream import StreamConsumer
from ps_globus.proxystore import GlobusConnector
from ps_globus.stream import GlobusSubscriber
subscriber = GlobusSubscriber(GlobusConnector({store!r}), 'results', key_file={key!r}, timeout=60)
# Look once before the producer starts: only the planted file is there.
assert subscriber._core.next(0) is None
print('waiting', flush=True)
consumer = StreamConsumer(subscriber, filter_=lambda m: m.get('skip', False))
got = [(meta['i'], value) for meta, value in consumer.iter_objects_with_metadata()]
store_names = sorted(s.name for s in consumer._stores.values())
print(json.dumps({{'got': got, 'rejected': subscriber.rejected, 'stores': store_names}}))
"""


def test_proxystore_stream_classes_run_over_globus_and_a_planted_event_runs_nothing(
    emu: Emulator, tmp_path: Path
) -> None:
    key = create_key_file(tmp_path / 'stream.key')
    connector = GlobusConnector('streams-globus')
    publisher = GlobusPublisher(connector, key_file=key)
    assert isinstance(publisher, MessagePublisher)
    # Planted at site b before anything is published, where the consumer reads.
    marker = tmp_path / 'owned'
    topic_at_b = Path(emu.sites['b']['local_path']) / 'streams-globus' / 'streams' / 'results'
    topic_at_b.mkdir(parents=True)
    (topic_at_b / f'{0:020}.msg').write_bytes(forged_message(marker))
    consumer = start(GLOBUS_CONSUMER.format(key=key, store='streams-globus'), b'', emu.env('b'))

    producer = StreamProducer(publisher, stores={'results': Store('stream-producer', connector)})
    for i in range(6):
        metadata = {'i': i, 'skip': i == 3}
        producer.send('results', {'i': i, 'data': 'x' * 1000 * i}, metadata=metadata, evict=False)
    producer.close(topics=['results'])

    said = json.loads(last_line(consumer))
    assert said['got'] == [[i, {'i': i, 'data': 'x' * 1000 * i}] for i in (0, 1, 2, 4, 5)]
    assert said['rejected'] >= 1
    assert not marker.exists(), 'the planted pickle ran'
    # Objects resolved through the consumer's own store, not the one the event named.
    assert said['stores'] == ['ps-globus-stream:streams-globus']


def test_a_globus_shim_refuses_to_start_without_a_key_and_events_of_another_store(
    emu: Emulator, tmp_path: Path
) -> None:
    connector = GlobusConnector('streams-nokey')
    with pytest.raises(InvalidInput, match='ps-globus stream key'):
        GlobusPublisher(connector, key_file=tmp_path / 'absent.key')
    with pytest.raises(InvalidInput, match='ps-globus stream key'):
        GlobusSubscriber(connector, 'results', key_file=tmp_path / 'absent.key')
    key = create_key_file(tmp_path / 'k')
    publisher = GlobusPublisher(connector, key_file=key)
    elsewhere = Store('elsewhere', FileConnector(str(tmp_path / 'files')))
    producer = StreamProducer(publisher, stores={'results': elsewhere})
    with pytest.raises(InvalidInput, match='announces objects of its own store'):
        producer.send('results', 1)


def test_proxystore_stream_classes_over_a_redis_stream_replay_for_a_late_consumer(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    connector = RedisConnector('127.0.0.1', redis_server.port)
    publisher = RedisStreamPublisher(connector)
    producer = StreamProducer(
        publisher, stores={'t': Store('redis-stream', connector)}, batch_size=2
    )
    for i in range(5):
        producer.send('t', i * 10, metadata={'i': i}, evict=False)
    producer.close(topics=['t'])
    # Started after everything was published (ProxyStore's pub/sub shim would see nothing).
    subscriber = RedisStreamSubscriber(connector, 't', timeout=30)
    assert isinstance(subscriber, MessageSubscriber)
    consumer = StreamConsumer(subscriber, filter_=lambda m: m['i'] == 1)
    assert list(consumer.iter_objects()) == [0, 20, 30, 40]
    # From a later position: batch 1 holds items 2 and 3.
    late = StreamConsumer(RedisStreamSubscriber(connector, 't', position=1, timeout=30))
    assert list(late.iter_objects()) == [20, 30, 40]


def test_a_sealed_redis_stream_drops_a_forged_entry_before_proxystore_sees_it(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    key = create_key_file(tmp_path / 'k')
    connector = RedisConnector('127.0.0.1', redis_server.port, prefix='sealed:')
    marker = tmp_path / 'owned'
    # Anyone who can write to the server adds an entry at position 0.
    redis_server.cli('XADD', 'sealed:messages:t', '*', 'p', '0', 'm', 'psgm1forged')
    with open(tmp_path / 'forged', 'wb') as f:
        f.write(forged_message(marker))
    producer = StreamProducer(
        RedisStreamPublisher(connector, key_file=key), stores={'t': Store('sealed', connector)}
    )
    producer.send('t', 'genuine')
    producer.close(topics=['t'])
    subscriber = RedisStreamSubscriber(connector, 't', key_file=key, timeout=30)
    assert list(StreamConsumer(subscriber).iter_objects()) == ['genuine']
    assert subscriber.rejected == 1
    # The same forged bytes on an unsealed channel would reach ProxyStore: documented.
    assert not marker.exists()


def test_the_ps_globus_face_streams_values_over_redis_and_globus(
    emu: Emulator, redis_server: RedisServer, tmp_path: Path
) -> None:
    redis = RedisConnector('127.0.0.1', redis_server.port)
    with Producer(redis, 'plain') as producer:
        for i in range(3):
            producer.send([i], metadata={'n': i})
    assert list(Consumer(redis, 'plain', timeout=30)) == [[0], [1], [2]]
    assert list(Consumer(redis, 'plain', timeout=30).with_metadata()) == [
        ({'n': i}, [i]) for i in range(3)
    ]

    key = create_key_file(tmp_path / 'k')
    with Producer(GlobusConnector('face-globus'), 'g', key_file=key) as producer:
        producer.send({'a': 1})
        producer.send({'b': 2})
    done = run_at(
        emu,
        'b',
        f"""
        from ps_globus.proxystore import GlobusConnector
        from ps_globus.stream import Consumer
        consumer = Consumer(GlobusConnector('face-globus'), 'g', key_file={key!r}, timeout=60)
        print(list(consumer), consumer.rejected)
        """,
    )
    assert done.stdout.decode().strip() == "[{'a': 1}, {'b': 2}] 0"
