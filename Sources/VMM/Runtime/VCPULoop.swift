import DeviceModel
import HostSystem
import Hypervisor
import Logging
import Synchronization

/// The loop one vCPU thread runs: enter the guest, dispatch port I/O and MMIO exits to the
/// buses, and turn power events into an `ExitSignal` report.
final class VCPULoop: Sendable {
    let vcpu: any VirtualCPU
    let pio: Bus
    let mmio: Bus
    let exits: ExitSignal
    let logger: Logger
    let gate: PauseGate
    private let stopping = Atomic<Bool>(false)

    init(vcpu: any VirtualCPU, pio: Bus, mmio: Bus, exits: ExitSignal, gate: PauseGate = PauseGate(), logger: Logger) {
        self.vcpu = vcpu
        self.gate = gate
        self.pio = pio
        self.mmio = mmio
        self.exits = exits
        self.logger = logger
    }

    /// Asks the loop to end and kicks the vCPU out of the guest.
    func stop() {
        stopping.store(true, ordering: .releasing)
        vcpu.kicker.kick()
    }

    /// Kicks the vCPU out of the guest so that it parks at the pause gate (closed by the caller).
    func kick() {
        vcpu.kicker.kick()
    }

    /// Runs until stopped or until the guest powers off, resets or fails. Between guest
    /// entries it passes the pause gate, parking there while the VM is paused.
    func run() {
        let id = vcpu.id
        while !stopping.load(ordering: .acquiring) {
            if gate.checkpoint() { continue }
            let exit: VCPUExit
            do {
                exit = try vcpu.run()
            } catch {
                exits.report(.failure("vCPU \(id): \(error)"))
                return
            }
            switch exit {
            case .ioIn(let port, let data):
                for i in 0..<data.count { data.set(pio.readOrAllOnes(address: UInt64(port), size: data.size), at: i) }
            case .ioOut(let port, let data):
                for i in 0..<data.count { pio.write(address: UInt64(port), size: data.size, value: data.value(at: i)) }
            case .mmioRead(let address, let data):
                data.set(mmio.readOrAllOnes(address: address, size: data.size))
            case .mmioWrite(let address, let data):
                mmio.write(address: address, size: data.size, value: data.value)
            case .interrupted, .interruptWindowOpen, .ioapicEOI:
                continue
            case .shutdown:
                logger.info("vCPU \(id): triple fault; resetting the VM")
                exits.report(.reset)
                return
            case .systemEvent(.shutdown):
                exits.report(.shutdown)
                return
            case .systemEvent(.reset):
                exits.report(.reset)
                return
            case .systemEvent(let event):
                exits.report(.failure("vCPU \(id): system event \(event)"))
                return
            case .halt:
                // Only without an in-kernel irqchip, which this VMM always creates.
                exits.report(.failure("vCPU \(id): unexpected halt exit"))
                return
            case .internalError(let error):
                exits.report(.failure("vCPU \(id): KVM internal error: \(error)"))
                return
            case .failEntry(let reason, let cpu):
                exits.report(.failure("vCPU \(id): entry failed (hardware reason \(reason), cpu \(cpu))"))
                return
            case .debug, .hypercall, .unknown:
                exits.report(.failure("vCPU \(id): unhandled exit \(exit)"))
                return
            }
        }
    }
}
