import CLinux
import Devices
import Glibc
import HostSystem
import Logging
import VirtioDevices

/// Device output written straight to a descriptor (standard output, a file, a pty): the
/// serial port's bytes one at a time, the virtio console's in runs.
final class DescriptorOutput: SerialOutput, ConsoleOutput {
    let descriptor: Int32
    private let owner: OwnedFileDescriptor?

    /// Writes to `descriptor`; `owner`, if given, keeps it open.
    init(descriptor: Int32, owner: OwnedFileDescriptor? = nil) {
        self.descriptor = descriptor
        self.owner = owner
    }

    func write(_ byte: UInt8) {
        var value = byte
        // A full pty or pipe drops the byte rather than stalling the vCPU.
        _ = Glibc.write(descriptor, &value, 1)
    }

    func write(_ bytes: [UInt8]) {
        var done = 0
        while done < bytes.count {
            let result = bytes.withUnsafeBytes { Glibc.write(descriptor, $0.baseAddress! + done, $0.count - done) }
            if result > 0 {
                done += result
            } else if result < 0 && errno == EINTR {
                continue
            } else {
                // A closed reader or a full non-blocking pty: the rest is dropped, as a
                // disconnected terminal would.
                return
            }
        }
    }
}

/// The host side of a serial port or virtio console: where output goes, where input comes
/// from, and what to restore or close afterwards.
final class HostEndpoint: Sendable {
    let output: (any SerialOutput & ConsoleOutput)?
    let inputDescriptor: Int32?
    let terminal: RawTerminal?
    let pty: PseudoTerminal?
    let file: OwnedFileDescriptor?
    /// The listening socket of `socket` mode.
    let socket: SocketConsole?

    init(output: (any SerialOutput & ConsoleOutput)?, inputDescriptor: Int32?, terminal: RawTerminal?, pty: PseudoTerminal?,
         file: OwnedFileDescriptor?, socket: SocketConsole? = nil) {
        self.output = output
        self.inputDescriptor = inputDescriptor
        self.terminal = terminal
        self.pty = pty
        self.file = file
        self.socket = socket
    }

    /// Puts the host terminal back as it was.
    func restore() {
        terminal?.restore()
        socket?.stop()
    }

    /// Opens the host side `config` asks for; nil for `off`. `what` names the device in
    /// messages ("serial port", "virtio console").
    static func open(_ config: ConsoleConfig, what: String, logger: Logger) throws -> HostEndpoint? {
        switch config.mode {
        case .off:
            return nil
        case .null:
            return HostEndpoint(output: nil, inputDescriptor: nil, terminal: nil, pty: nil, file: nil)
        case .tty:
            let terminal = RawTerminal.isTerminal(0) ? try RawTerminal(descriptor: 0) : nil
            return HostEndpoint(output: DescriptorOutput(descriptor: 1), inputDescriptor: 0, terminal: terminal, pty: nil, file: nil)
        case .file:
            // Appended to: `vm.boot` starts the file afresh (VMMController), a guest reboot goes on
            // writing after what the guest wrote before it, as Cloud Hypervisor keeps its file.
            let file = try OwnedFileDescriptor(path: config.file ?? "", flags: O_WRONLY | O_CREAT | O_APPEND)
            return HostEndpoint(output: DescriptorOutput(descriptor: file.rawValue, owner: file), inputDescriptor: nil, terminal: nil, pty: nil, file: file)
        case .socket:
            let socket = try SocketConsole(path: config.socket ?? "")
            logger.info("\(what) on socket \(socket.path)")
            return HostEndpoint(output: socket, inputDescriptor: nil, terminal: nil, pty: nil, file: nil, socket: socket)
        case .pty:
            let pty = try PseudoTerminal()
            logger.info("\(what) on pseudo-terminal \(pty.path)")
            writeToStandardError("cloud-hypervisor: \(what): \(pty.path)\n")
            return HostEndpoint(output: DescriptorOutput(descriptor: pty.controller.rawValue, owner: pty.controller),
                                inputDescriptor: pty.controller.rawValue, terminal: nil, pty: pty, file: nil)
        }
    }

    /// Starts carrying this endpoint's input into `sink`; nil when there is no input or it
    /// cannot be polled (a regular file, /dev/null).
    func startInput(into sink: HostInputSink, name: String, events: EventManager, logger: Logger) throws -> HostInputPump? {
        if let socket {
            try socket.start(into: sink, name: name, events: events, logger: logger)
            return nil
        }
        guard let input = inputDescriptor else { return nil }
        let pump = try HostInputPump(sink: sink, name: name, descriptor: input, events: events, logger: logger)
        do {
            try pump.start()
            return pump
        } catch let error as SystemError where error.errno == EPERM {
            logger.debug("\(name) input: descriptor \(input) cannot be polled; no input")
            return nil
        }
    }
}
