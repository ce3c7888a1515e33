import Devices
import Glibc
import HostSystem
import Logging
import Synchronization
import VirtioDevices

/// A serial port or virtio console on a Unix socket (`--serial socket=PATH`,
/// `--console socket=PATH`), as Cloud Hypervisor offers it: the VMM listens at the path, one
/// client at a time reads the device's output and types its input. A new connection takes
/// over from the previous one; output while nobody is connected is dropped, as on a
/// disconnected terminal.
final class SocketConsole: SerialOutput, ConsoleOutput, @unchecked Sendable {
    /// The socket path.
    let path: String
    private let listener: UnixSocket
    private let client = Mutex<(socket: UnixSocket, pump: HostInputPump?)?>(nil)
    private let loop = Mutex<EventManager?>(nil)

    /// Listens at `path` (a stale socket file there is replaced; a live one is refused).
    init(path: String) throws {
        self.path = path
        do {
            listener = try UnixSocket.listening(at: path, backlog: 4)
        } catch {
            throw VMMError(description: "socket=\(path): \(error)\(error.errno == EADDRINUSE ? " (another process serves it)" : "")")
        }
    }

    deinit {
        _ = UnixSocket.removeSocketFile(at: path)
    }

    /// Starts accepting clients on `events`; each client's input goes into `sink`.
    func start(into sink: HostInputSink, name: String, events: EventManager, logger: Logger) throws {
        loop.withLock { $0 = events }
        try events.add(listener.rawValue, events: [.readable]) { [weak self] _ in
            self?.acceptClients(into: sink, name: name, events: events, logger: logger)
        }
    }

    /// Stops accepting, lets the current client go, and frees the path (a rebooted VM
    /// listens there again).
    func stop() {
        if let events = loop.withLock({ $0 }) { try? events.remove(listener.rawValue) }
        try? listener.shutdown(.both)
        _ = UnixSocket.removeSocketFile(at: path)
        let previous = client.withLock { current -> (socket: UnixSocket, pump: HostInputPump?)? in
            defer { current = nil }
            return current
        }
        previous?.pump?.stop()
    }

    private func acceptClients(into sink: HostInputSink, name: String, events: EventManager, logger: Logger) {
        while true {
            let accepted: UnixSocket?
            do { accepted = try listener.accept() } catch {
                logger.warning("\(name) socket \(path): \(error)")
                return
            }
            guard let socket = accepted else { return }
            let pump = try? HostInputPump(sink: sink, name: name, descriptor: socket.rawValue, events: events, logger: logger)
            do { try pump?.start() } catch { logger.warning("\(name) socket \(path): no input: \(error)") }
            let previous = client.withLock { current -> (socket: UnixSocket, pump: HostInputPump?)? in
                defer { current = (socket, pump) }
                return current
            }
            previous?.pump?.stop()
            logger.info("\(name): a client connected to \(path)")
        }
    }

    /// One byte from the UART.
    func write(_ byte: UInt8) { write([byte]) }

    /// Bytes from the device to the connected client; dropped when there is none or it does
    /// not keep up (the socket is non-blocking, so the device never waits).
    func write(_ bytes: [UInt8]) {
        client.withLock { current in
            guard let socket = current?.socket else { return }
            _ = try? socket.send(bytes)
        }
    }
}
