//! A Redis client for a server's configuration: the address, TLS, the user and the
//! password read from `password_env` in this process, now.

use super::RedisConfig;
use crate::error::{Error, Result};

/// The connection settings of `config`, with the password read from `password_env` now.
pub(super) fn client(config: &RedisConfig) -> Result<redis::Client> {
    use redis::{ConnectionAddr, IntoConnectionInfo, RedisConnectionInfo};
    let invalid = |message: String| Error::invalid_config("redis connector", message);
    if let Some(problem) = config.problem() {
        return Err(invalid(problem));
    }
    let addr = match &config.socket {
        Some(path) => ConnectionAddr::Unix(path.clone()),
        None if config.tls => ConnectionAddr::TcpTls {
            host: config.host.clone(),
            port: config.port,
            insecure: false,
            tls_params: None,
        },
        None => ConnectionAddr::Tcp(config.host.clone(), config.port),
    };
    let mut redis = RedisConnectionInfo::default()
        .set_db(config.db)
        .set_lib_name("ps-globus", env!("CARGO_PKG_VERSION"));
    if let Some(user) = &config.username {
        redis = redis.set_username(user);
    }
    if let Some(variable) = &config.password_env {
        let password = crate::settings::secret_from_env(variable).ok_or_else(|| {
            invalid(format!(
                "the environment variable {variable} (password_env) is not set in this \
                 process: set it to the Redis server's password"
            ))
        })?;
        redis = redis.set_password(password);
    }
    let info = addr
        .into_connection_info()
        .map_err(|e| invalid(e.to_string()))?
        .set_redis_settings(redis)
        // Requests are small and answered at once: without NODELAY a write that follows
        // an unacknowledged one waits for the server's delayed acknowledgement (40 ms on
        // Linux). redis-py sets it too.
        .set_tcp_settings(redis::io::tcp::TcpSettings::default().set_nodelay(true));
    if config.tls {
        // rustls needs the process's crypto provider (ring), as the HTTP client does.
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
    let client = match &config.tls_ca_file {
        Some(path) => {
            let pem = std::fs::read(path).map_err(|e| Error::io("read", path, e))?;
            let certificates = redis::TlsCertificates {
                client_tls: None,
                root_cert: Some(pem),
            };
            redis::Client::build_with_tls(info, certificates)
        }
        None => redis::Client::open(info),
    };
    client.map_err(|e| invalid(e.to_string()))
}
