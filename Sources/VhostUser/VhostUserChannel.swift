import Glibc
import HostSystem

/// Where a front-end's messages go: a connected stream that carries bytes and descriptors.
public protocol VhostUserChannel: Sendable {
    /// Sends one message with `descriptors` passed alongside (`SCM_RIGHTS`).
    func send(_ bytes: [UInt8], descriptors: [Int32], request: VhostUserRequest) throws(VhostUserError)
    /// Reads exactly `count` bytes. Descriptors that come with them are closed and counted.
    func receive(count: Int, request: VhostUserRequest) throws(VhostUserError) -> (bytes: [UInt8], descriptors: Int)
}

/// A vhost-user connection over a Unix stream socket, with a reply timeout.
public final class UnixVhostUserChannel: VhostUserChannel {
    /// The connected socket.
    public let socket: UnixSocket
    /// How long a reply may take, in milliseconds.
    public let timeoutMilliseconds: Int32

    /// Wraps a connected socket.
    public init(socket: UnixSocket, timeoutMilliseconds: Int32 = 10_000) {
        self.socket = socket
        self.timeoutMilliseconds = timeoutMilliseconds
    }

    /// Connects to the back-end listening at `path`, retrying every `retryMilliseconds`
    /// until `timeoutMilliseconds` have passed (Cloud Hypervisor waits up to 60 s for the
    /// back-end's socket to appear).
    public static func connect(path: String, timeoutMilliseconds: Int = 60_000, retryMilliseconds: Int = 100) throws(SystemError) -> UnixVhostUserChannel {
        var waited = 0
        while true {
            do {
                return UnixVhostUserChannel(socket: try UnixSocket.connect(to: path))
            } catch {
                guard waited < timeoutMilliseconds else { throw error }
                usleep(UInt32(retryMilliseconds * 1000))
                waited += retryMilliseconds
            }
        }
    }

    /// Listens at `path` and waits, without a limit, for one back-end to connect (Cloud
    /// Hypervisor's `vhost_mode=server`: the VMM owns the socket and the back-end comes to it).
    /// The listener is returned too: a back-end that restarts connects to it again.
    public static func accept(path: String) throws(SystemError) -> (channel: UnixVhostUserChannel, listener: UnixSocket) {
        let listener = try UnixSocket.listening(at: path, backlog: 1)
        return (try accept(on: listener), listener)
    }

    /// Waits, without a limit, for one back-end to connect to `listener`, which already listens
    /// (a VM rebuilt by a reboot while its back-end was away waits on the socket it had).
    public static func accept(on listener: UnixSocket) throws(SystemError) -> UnixVhostUserChannel {
        while true {
            _ = try listener.wait(for: .readable, timeoutMilliseconds: -1)
            if let socket = try listener.accept() { return UnixVhostUserChannel(socket: socket) }
        }
    }

    /// Sends the whole message (a stream may take it in parts; the descriptors go with the first).
    public func send(_ bytes: [UInt8], descriptors: [Int32], request: VhostUserRequest) throws(VhostUserError) {
        var sent = 0
        var passing = descriptors
        while sent < bytes.count {
            do {
                guard let count = try socket.send(bytes[sent...], descriptors: passing) else { throw VhostUserError.closed(request: request) }
                sent += count
                passing = []
            } catch let error as SystemError {
                throw .system(error)
            } catch {
                throw .closed(request: request)
            }
        }
    }

    /// Reads exactly `count` bytes, waiting at most the timeout for each part.
    public func receive(count: Int, request: VhostUserRequest) throws(VhostUserError) -> (bytes: [UInt8], descriptors: Int) {
        var bytes: [UInt8] = []
        var descriptors = 0
        while bytes.count < count {
            do {
                guard try socket.wait(for: .readable, timeoutMilliseconds: timeoutMilliseconds) else {
                    throw VhostUserError.timedOut(request: request, milliseconds: timeoutMilliseconds)
                }
                guard let message = try socket.receive(maxBytes: count - bytes.count) else { continue }
                if message.isEndOfStream { throw VhostUserError.closed(request: request) }
                bytes += message.bytes
                descriptors += message.descriptors.count
            } catch let error as VhostUserError {
                throw error
            } catch let error as SystemError {
                throw .system(error)
            } catch {
                throw .closed(request: request)
            }
        }
        return (bytes, descriptors)
    }
}
