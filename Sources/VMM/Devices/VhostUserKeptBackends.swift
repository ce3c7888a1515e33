// The vhost-user back-end connections a VM's in-place reboot carries from the stopped machine
// to the one built in its place.
import HostSystem
import Synchronization
import VhostUser

/// One vhost-user device's back-end connection, handed from a stopped machine to its
/// successor (``VhostUserCommon/detach()``): the connection, when the back-end was there, and
/// with `vhost_mode=server` the listening socket.
struct KeptVhostUserConnection: Sendable {
    /// The connection, already negotiated once (`nil` while the back-end was away).
    let frontend: VhostUserFrontend?
    /// With `vhost_mode=server`, the socket the back-end connects to.
    let listener: UnixSocket?
}

/// The back-end connections of a VM's vhost-user devices kept across a guest reset, by socket
/// path. QEMU keeps a vhost-user back-end across a reset; Cloud Hypervisor connects again,
/// which a back-end serving one connection (virtiofsd, `vhost_user_net`) cannot answer and a
/// `vhost_mode=server` socket still held by the stopped machine refuses. The machine a reboot
/// builds takes each device's connection here instead of connecting; what no device took
/// (a configuration without it) is closed.
final class KeptVhostUserBackends: Sendable {
    private let kept = Mutex<[String: KeptVhostUserConnection]>([:])

    /// An empty set.
    init() {}

    /// Keeps `connection`, the back-end at `socket`.
    func keep(_ connection: KeptVhostUserConnection, socket: String) {
        kept.withLock { $0[socket] = connection }
    }

    /// The kept connection to the back-end at `socket`, which the caller now owns.
    func take(socket: String) -> KeptVhostUserConnection? {
        kept.withLock { $0.removeValue(forKey: socket) }
    }

    /// The sockets whose connections are kept.
    var sockets: [String] { kept.withLock { Array($0.keys).sorted() } }

    /// Closes every connection no device took: the back-ends read the hang-up; a listener's
    /// socket file is removed.
    func closeRest() {
        let rest = kept.withLock { kept -> [String: KeptVhostUserConnection] in
            defer { kept = [:] }
            return kept
        }
        for (socket, connection) in rest {
            try? (connection.frontend?.channel as? UnixVhostUserChannel)?.socket.shutdown(.both)
            if let listener = connection.listener {
                try? listener.shutdown(.both)
                UnixSocket.removeSocketFile(at: socket)
            }
        }
    }
}
