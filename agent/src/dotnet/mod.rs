//! .NET through the runtime's own diagnostic port: the IPC protocol
//! ([`ipc`]), the nettrace stream ([`nettrace`], [`metadata`]), provider
//! specs ([`providers`]), the port of a process ([`port`]) and the
//! sessions the API runs over it ([`session`]).

pub mod assembly;
pub mod bytes;
pub mod counters;
pub mod exceptions;
pub mod gcdump;
pub mod ipc;
pub mod metadata;
pub mod nettrace;
pub mod port;
pub mod profiles;
pub mod prometheus;
pub mod providers;
pub mod readings;
pub mod rundown;
pub mod session;
pub mod spec;
