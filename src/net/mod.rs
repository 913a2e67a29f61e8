//! Foundations under every connection: the stream types protocols pass around
//! ([`io`]), zero-copy relay on Linux (`splice`), and the original destination of a
//! redirected connection (`original_dst`).

pub(crate) mod io;
pub(crate) mod original_dst;
#[cfg(target_os = "linux")]
pub(crate) mod splice;
