//! Globus Transfer: the API's documents (shared by the client and the emulator).
//!
//! [`types`] holds every request and response document of Transfer API v0.10 that the
//! product and the emulator use, defined once so that both sides of the wire agree.

pub mod types;
