//! Comparing two socket dumps of the library (`portdoctor::snapshot::Socket`) by identity and
//! state.

/// A socket's identity and state, for comparing two dumps of the same table.
pub type SocketKey = (u8, std::net::IpAddr, u16, std::net::IpAddr, u16, u64);

pub fn socket_key(s: &portdoctor::snapshot::Socket) -> SocketKey {
    (
        s.state as u8,
        s.local_ip,
        s.local_port,
        s.remote_ip,
        s.remote_port,
        s.inode,
    )
}

/// The sorted keys of a dump.
pub fn socket_table(sockets: &[portdoctor::snapshot::Socket]) -> Vec<SocketKey> {
    let mut v: Vec<SocketKey> = sockets.iter().map(socket_key).collect();
    v.sort_unstable();
    v
}
