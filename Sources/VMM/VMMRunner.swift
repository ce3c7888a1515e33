import CLinux
import HostSystem
import Hypervisor
import Logging

/// The VMM's version.
public enum VMMVersion {
    /// The version string printed by `--version`.
    public static let string = "0.1.0"
}

/// Why the VMM could not run the VM.
public struct VMMError: Error, CustomStringConvertible {
    /// The sentence.
    public let description: String
}

/// Runs one VM from a validated configuration until the guest powers off: builds it, starts
/// one thread per vCPU and the device event loop, waits, and rebuilds it when the guest resets.
public final class VMMRunner {
    let config: VMConfig
    let logger: Logger

    /// Prepares to run `config`.
    public init(config: VMConfig, logger: Logger) {
        self.config = config
        self.logger = logger
    }

    /// Runs until the guest shuts down (returns) or something fails (throws).
    public func run() throws {
        try KickSignal.install()
        // Termination signals are delivered through a signalfd on the event loop, so they
        // are blocked in every thread; threads inherit the mask from this one.
        let signals = clinux_signalfd_termination()
        guard signals >= 0 else { throw VMMError(description: "\(SystemError.current("signalfd"))") }
        let signalDescriptor = OwnedFileDescriptor(adopting: signals)
        let hypervisor = try KVMHypervisor()

        while true {
            let reason = try runOnce(hypervisor: hypervisor, signals: signalDescriptor)
            logger.info("VM stopped: \(reason)")
            switch reason {
            case .reset:
                logger.info("rebooting the VM")
                continue
            case .shutdown, .signal:
                return
            case .failure(let text):
                throw VMMError(description: text)
            }
        }
    }

    private func runOnce(hypervisor: KVMHypervisor, signals: OwnedFileDescriptor) throws -> VMExitReason {
        let exits = try ExitSignal()
        let events = try EventManager()
        try events.add(signals.rawValue, events: [.readable]) { _ in
            let number = clinux_read_signalfd(signals.rawValue)
            if number > 0 { exits.report(.signal(number)) }
        }
        let built: BuiltVM
        do {
            built = try VMBuilder(hypervisor: hypervisor, logger: logger).build(config, events: events, exits: exits)
        } catch {
            try? events.remove(signals.rawValue)
            throw error
        }
        defer {
            built.devices.serialHost?.restore()
            built.console?.host.restore()
        }
        try events.start(name: "ch-event-loop")

        let loops = built.vcpus.map { VCPULoop(vcpu: $0, pio: built.pio, mmio: built.mmio, exits: exits, logger: logger) }
        var threads: [HostThread] = []
        for loop in loops {
            threads.append(try HostThread(name: "ch-vcpu\(loop.vcpu.id)") { loop.run() })
        }
        let reason = exits.wait()
        for loop in loops { loop.stop() }
        for thread in threads { thread.join() }
        events.stop()
        try? events.remove(signals.rawValue)
        built.devices.serialInput?.stop()
        built.console?.input?.stop()
        return reason
    }
}
