//! The relay: where endpoints register, find each other and tunnel (see [`server`]), and
//! an endpoint's connection to it ([`client`]).

pub mod auth;
pub mod client;
pub mod proto;
pub mod server;
pub mod transport;
