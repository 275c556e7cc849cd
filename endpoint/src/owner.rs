//! Who is calling: the uid that owns the client's end of a connection.
//!
//! ProxyStore's client speaks plain HTTP with no credentials, so the REST API cannot ask
//! who is calling; it can look. On loopback, the kernel lists every TCP socket of this
//! network namespace with its owner in `/proc/net/tcp` and `/proc/net/tcp6`: the row
//! whose local address is the client's address and whose remote address is ours is the
//! client's socket, and its `uid` column is the caller. On the Unix socket,
//! `SO_PEERCRED` says it directly. A caller on another host has no uid we can know.
//!
//! The listeners here do the lookup once per connection, at accept, and hand it to
//! every request on that connection as its [`Caller`].

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use axum::extract::connect_info::Connected;
use axum::serve::{IncomingStream, Listener};
use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};

/// The caller of one connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Caller {
    /// The uid owning the client's socket: `None` for a client on another host (or one
    /// whose socket vanished before we looked).
    pub uid: Option<u32>,
    /// Where it came from, for messages.
    pub from: String,
}

/// This process's uid.
pub fn own_uid() -> u32 {
    rustix::process::getuid().as_raw()
}

/// The owner of the socket at `client` connected to `server`, from `/proc/net/tcp{,6}`.
pub fn tcp_owner(client: SocketAddr, server: SocketAddr) -> Option<u32> {
    let tables: &[&str] = match client {
        SocketAddr::V4(_) => &["/proc/net/tcp", "/proc/net/tcp6"],
        SocketAddr::V6(_) => &["/proc/net/tcp6"],
    };
    tables.iter().find_map(|table| {
        let text = std::fs::read_to_string(table).ok()?;
        owner_in(&text, client, server)
    })
}

/// The uid of the row of a `/proc/net/tcp`-format `table` whose local address is
/// `client` and remote address is `server`.
pub fn owner_in(table: &str, client: SocketAddr, server: SocketAddr) -> Option<u32> {
    table.lines().skip(1).find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        // sl local rem st tx:rx tr:when retrnsmt uid ...
        let (local, remote, uid) = (fields.get(1)?, fields.get(2)?, fields.get(7)?);
        let same = |text: &str, addr: SocketAddr| {
            parse_address(text).is_some_and(|found| same_endpoint(found, addr))
        };
        (same(local, client) && same(remote, server))
            .then(|| uid.parse().ok())
            .flatten()
    })
}

/// Whether two socket addresses are the same, an IPv4 address being equal to its
/// IPv4-mapped IPv6 form (a dual-stack socket lists the latter).
fn same_endpoint(a: SocketAddr, b: SocketAddr) -> bool {
    let canonical = |ip: IpAddr| match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    };
    a.port() == b.port() && canonical(a.ip()) == canonical(b.ip())
}

/// `0100007F:1F90` (IPv4) or 32 hex digits and a port (IPv6), as the kernel prints them:
/// each 32-bit word of the address in the host's byte order, the port in hex.
fn parse_address(text: &str) -> Option<SocketAddr> {
    let (address, port) = text.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let word = |i: usize| -> Option<[u8; 4]> {
        let hex = address.get(i * 8..i * 8 + 8)?;
        Some(u32::from_str_radix(hex, 16).ok()?.to_ne_bytes())
    };
    let ip = match address.len() {
        8 => IpAddr::V4(Ipv4Addr::from(word(0)?)),
        32 => {
            let mut bytes = [0u8; 16];
            for i in 0..4 {
                bytes[i * 4..i * 4 + 4].copy_from_slice(&word(i)?);
            }
            IpAddr::V6(Ipv6Addr::from(bytes))
        }
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

/// A TCP listener that finds each loopback client's uid at accept.
#[derive(Debug)]
pub struct TcpOwners(pub TcpListener);

impl Listener for TcpOwners {
    type Io = TcpStream;
    type Addr = Caller;

    async fn accept(&mut self) -> (TcpStream, Caller) {
        // axum's own accept retries what fails (out of file descriptors and the like).
        let (stream, client) = Listener::accept(&mut self.0).await;
        let uid = match stream.local_addr() {
            Ok(server) if client.ip().is_loopback() => tcp_owner(client, server),
            _ => None,
        };
        let from = client.to_string();
        (stream, Caller { uid, from })
    }

    fn local_addr(&self) -> io::Result<Caller> {
        Ok(Caller {
            uid: Some(own_uid()),
            from: self.0.local_addr()?.to_string(),
        })
    }
}

/// A Unix-socket listener that finds each client's uid with `SO_PEERCRED`.
#[derive(Debug)]
pub struct UnixOwners(pub UnixListener);

impl Listener for UnixOwners {
    type Io = UnixStream;
    type Addr = Caller;

    async fn accept(&mut self) -> (UnixStream, Caller) {
        let (stream, _) = Listener::accept(&mut self.0).await;
        let uid = stream.peer_cred().ok().map(|c| c.uid());
        let from = "the Unix socket".to_owned();
        (stream, Caller { uid, from })
    }

    fn local_addr(&self) -> io::Result<Caller> {
        Ok(Caller {
            uid: Some(own_uid()),
            from: "the Unix socket".into(),
        })
    }
}

impl Connected<IncomingStream<'_, TcpOwners>> for Caller {
    fn connect_info(stream: IncomingStream<'_, TcpOwners>) -> Self {
        stream.remote_addr().clone()
    }
}

impl Connected<IncomingStream<'_, UnixOwners>> for Caller {
    fn connect_info(stream: IncomingStream<'_, UnixOwners>) -> Self {
        stream.remote_addr().clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_client_row_gives_its_owner_not_the_servers() {
        // Two rows of one loopback connection, 127.0.0.1:40000 -> 127.0.0.1:8080: the
        // server's socket (uid 0) and the client's (uid 1000).
        let table = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n\
   0: 0100007F:1F90 0100007F:9C40 01 00000000:00000000 00:00000000 00000000     0        0 1 1 0 20 4 30 10 -1\n\
   1: 0100007F:9C40 0100007F:1F90 01 00000000:00000000 00:00000000 00000000  1000        0 2 1 0 20 4 30 10 -1\n";
        let client: SocketAddr = "127.0.0.1:40000".parse().unwrap();
        let server: SocketAddr = "127.0.0.1:8080".parse().unwrap();
        assert_eq!(owner_in(table, client, server), Some(1000));
        assert_eq!(owner_in(table, server, client), Some(0));
        let stranger: SocketAddr = "127.0.0.1:40001".parse().unwrap();
        assert_eq!(owner_in(table, stranger, server), None);
    }

    #[test]
    fn ipv6_rows_parse_and_mapped_ipv4_matches() {
        // ::ffff:127.0.0.1 port 0x9C40, as a dual-stack socket lists it.
        let table = "header\n   0: 0000000000000000FFFF00000100007F:9C40 0000000000000000FFFF00000100007F:1F90 01 0:0 0:0 0 42 0 1\n";
        let client: SocketAddr = "127.0.0.1:40000".parse().unwrap();
        let server: SocketAddr = "127.0.0.1:8080".parse().unwrap();
        assert_eq!(owner_in(table, client, server), Some(42));
    }

    #[test]
    fn a_real_loopback_connection_is_owned_by_this_process() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let server = listener.local_addr().unwrap();
            let client = TcpStream::connect(server).await.unwrap();
            let (_accepted, from) = listener.accept().await.unwrap();
            assert_eq!(from, client.local_addr().unwrap());
            assert_eq!(tcp_owner(from, server), Some(own_uid()));
        });
    }
}
