//! Plain (blocking) connections of the `redis` crate: commands sent from a thread that
//! may block, and large values by a shorter way.
//!
//! A thread inside [`block_on`](crate::block_on) (the Python package, the blocking API)
//! sends its commands itself, as `redis-py` does, rather than handing each to a runtime
//! worker and being woken with the answer: on a 2-core machine every wake-up costs tens of
//! microseconds ([`Pool::query`]).
//!
//! The multiplexed connection copies a value three times on its way out (into the
//! command, into the packed command, into the connection's write buffer), each time into
//! fresh memory: a 1 MiB `SET` took 1.2-1.8 ms where `redis-benchmark` takes 0.7, and a
//! `put_batch` of 1 MiB objects 2.5 ms an object (ProxyStore's `redis-py` writes large
//! values without copying them, and took 0.85). Here, where the calling thread may block,
//! the large values are written from where they are, on that thread; elsewhere (an async
//! caller) each is copied once, into a recycled buffer with the small arguments around
//! it, and a blocking thread writes one while the task packs the next ([`Pool::send`]).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use redis::{RedisError, RedisResult, Value};

/// Values at least this large go by the bulk path (see the module docs); smaller ones
/// gain nothing from it and keep the multiplexed connection's pipelining.
pub(super) const BULK_MIN: usize = 128 << 10;

/// One command: its arguments.
pub(super) type Command<'a> = Vec<&'a [u8]>;

/// Idle blocking connections of one connector, reused (each is made with its AUTH and
/// SELECT once).
#[derive(Clone, Default)]
pub(super) struct Pool {
    idle: Arc<Mutex<Vec<redis::Connection>>>,
    /// Write buffers the writer is done with, for the next values: copying a value into
    /// memory already mapped costs a fraction of copying it into fresh memory.
    spare: Arc<Mutex<Vec<Vec<u8>>>>,
}

/// How many spare write buffers a connector keeps, and the largest it keeps.
const SPARE_BUFFERS: usize = QUEUED_WRITES + 2;
const SPARE_MAX: usize = 64 << 20;

/// How many packed writes wait for the writer at most: packing the next value overlaps
/// writing this one, and memory stays bounded by a few values.
const QUEUED_WRITES: usize = 2;

impl Pool {
    /// Sends `commands` on one connection (pipelined: all written, then every answer
    /// read); each command's answer. On this thread where it may block
    /// ([`Self::send_here`]); else the writes happen on a blocking thread while this
    /// task packs the next one: RESP arrays of bulk strings, each large value copied
    /// once, with the small arguments around it. A connection that fails
    /// is dropped, and the request tried once more on a new one (the commands are `SET`s
    /// and `MSET`s of fresh keys).
    pub(super) async fn send(
        &self,
        client: &redis::Client,
        timeout: Duration,
        commands: &[Command<'_>],
    ) -> RedisResult<Vec<Value>> {
        match self.send_once(client, timeout, commands).await {
            Err(e) if e.is_connection_dropped() || e.is_io_error() => {
                self.send_once(client, timeout, commands).await
            }
            done => done,
        }
    }

    async fn send_once(
        &self,
        client: &redis::Client,
        timeout: Duration,
        commands: &[Command<'_>],
    ) -> RedisResult<Vec<Value>> {
        if crate::runtime::may_block() {
            return self.send_here(client, timeout, commands);
        }
        let (writes, mut queued) = tokio::sync::mpsc::channel::<Vec<u8>>(QUEUED_WRITES);
        let (pool, client, answers) = (self.clone(), client.clone(), commands.len());
        let writer = crate::runtime::handle().spawn_blocking(move || {
            let mut connection = pool.take(&client, timeout)?;
            while let Some(write) = queued.blocking_recv() {
                connection.send_packed_command(&write)?;
                pool.recycle(write);
            }
            let answers = read_answers(&mut connection, answers)?;
            pool.give_back(connection);
            Ok(answers)
        });
        let mut out: Vec<u8> = self.buffer();
        let mut holds_large = false;
        'pack: for command in commands {
            out.extend_from_slice(format!("*{}\r\n", command.len()).as_bytes());
            for arg in command {
                if arg.len() >= BULK_MIN {
                    // One large value a write: the one before goes now, with what
                    // followed it.
                    if holds_large {
                        let full = std::mem::replace(&mut out, self.buffer());
                        if writes.send(full).await.is_err() {
                            break 'pack; // the writer failed: its error says why
                        }
                    }
                    out.reserve(arg.len() + 64);
                    holds_large = true;
                }
                out.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
                out.extend_from_slice(arg);
                out.extend_from_slice(b"\r\n");
            }
        }
        let _ = writes.send(out).await;
        drop(writes);
        match writer.await {
            Ok(done) => done,
            Err(e) => Err(RedisError::from(std::io::Error::other(e.to_string()))),
        }
    }

    /// [`Self::send_once`] on this thread, each large value written from where it is
    /// (the small pieces between them gathered into one write: the connections set
    /// `TCP_NODELAY`, so no write waits for the one before to be acknowledged).
    fn send_here(
        &self,
        client: &redis::Client,
        timeout: Duration,
        commands: &[Command<'_>],
    ) -> RedisResult<Vec<Value>> {
        let mut connection = self.take(client, timeout)?;
        let mut small = self.buffer();
        for command in commands {
            small.extend_from_slice(format!("*{}\r\n", command.len()).as_bytes());
            for arg in command {
                small.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
                if arg.len() >= BULK_MIN {
                    connection.send_packed_command(&small)?;
                    small.clear();
                    connection.send_packed_command(arg)?;
                } else {
                    small.extend_from_slice(arg);
                }
                small.extend_from_slice(b"\r\n");
            }
        }
        connection.send_packed_command(&small)?;
        self.recycle(small);
        let answers = read_answers(&mut connection, commands.len())?;
        self.give_back(connection);
        Ok(answers)
    }

    /// Sends `cmd` on an idle connection (or a new one) and reads its answer. The
    /// connection goes back for the next command unless it failed (an error answer
    /// leaves it in step; a broken or timed-out one does not).
    pub(super) fn query<T: redis::FromRedisValue>(
        &self,
        client: &redis::Client,
        timeout: Duration,
        cmd: &redis::Cmd,
    ) -> RedisResult<T> {
        let mut connection = self.take(client, timeout)?;
        let answer = cmd.query(&mut connection);
        match &answer {
            Err(e) if e.is_io_error() || e.is_timeout() || e.is_connection_dropped() => {}
            _ => self.give_back(connection),
        }
        answer
    }

    /// An empty write buffer: a spare one if there is.
    fn buffer(&self) -> Vec<u8> {
        self.spare
            .lock()
            .expect("bulk pool poisoned")
            .pop()
            .unwrap_or_default()
    }

    fn recycle(&self, mut buffer: Vec<u8>) {
        let mut spare = self.spare.lock().expect("bulk pool poisoned");
        if spare.len() < SPARE_BUFFERS && buffer.capacity() <= SPARE_MAX {
            buffer.clear();
            spare.push(buffer);
        }
    }

    fn take(&self, client: &redis::Client, timeout: Duration) -> RedisResult<redis::Connection> {
        if let Some(connection) = self.idle.lock().expect("bulk pool poisoned").pop() {
            return Ok(connection);
        }
        let connection = client.get_connection_with_timeout(timeout)?;
        connection.set_read_timeout(Some(timeout))?;
        connection.set_write_timeout(Some(timeout))?;
        Ok(connection)
    }

    fn give_back(&self, connection: redis::Connection) {
        let mut idle = self.idle.lock().expect("bulk pool poisoned");
        // A few are enough: more only while that many bulk writes run at once.
        if idle.len() < 4 {
            idle.push(connection);
        }
    }
}

/// Reads one answer per command; an error answer is returned as the error (after every
/// answer was read, so the connection stays in step).
fn read_answers(connection: &mut redis::Connection, count: usize) -> RedisResult<Vec<Value>> {
    let mut answers = Vec::with_capacity(count);
    let mut failed = None;
    for _ in 0..count {
        match connection.recv_response()? {
            Value::ServerError(e) => {
                failed.get_or_insert(RedisError::from(e));
                answers.push(Value::Nil);
            }
            value => answers.push(value),
        }
    }
    match failed {
        Some(e) => Err(e),
        None => Ok(answers),
    }
}
