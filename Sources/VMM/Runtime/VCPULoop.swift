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

    /// The state a triple fault leaves, for the log: instruction and stack pointers, control
    /// registers, the IDT, and any exception KVM still holds (the usual culprits: a stack
    /// or page table the guest lost, an IDT it overwrote).
    static func faultState(of vcpu: any VirtualCPU) -> String {
        guard let x86 = vcpu as? any X86VirtualCPU else { return "no register access" }
        func hex(_ value: some BinaryInteger) -> String { "0x" + String(value, radix: 16) }
        var parts: [String] = []
        if let regs = try? x86.registers() {
            parts.append("rip \(hex(regs.rip)) rsp \(hex(regs.rsp)) rflags \(hex(regs.rflags))")
        }
        if let sregs = try? x86.specialRegisters() {
            parts.append("cs \(hex(sregs.cs.selector)) cr0 \(hex(sregs.cr0)) cr2 \(hex(sregs.cr2)) cr3 \(hex(sregs.cr3)) cr4 \(hex(sregs.cr4)) efer \(hex(sregs.efer))")
            parts.append("idt \(hex(sregs.idt.base))/\(hex(sregs.idt.limit)) gdt \(hex(sregs.gdt.base))/\(hex(sregs.gdt.limit))")
        }
        if let events = try? x86.vcpuEvents(), events.exceptionInjected || events.exceptionPending {
            parts.append("exception \(events.exceptionNumber)\(events.exceptionHasErrorCode ? " code \(hex(events.exceptionErrorCode))" : "")")
        }
        return parts.isEmpty ? "registers unreadable" : parts.joined(separator: ", ")
    }

    /// Runs until stopped or until the guest powers off, resets or fails. Between guest
    /// entries it passes the pause gate, parking there while the VM is paused.
    func run() {
        let id = vcpu.id
        // Whether the last exit was a port or MMIO access, which KVM finishes (the instruction
        // pointer moved past it, what an IN or a read returned stored) only on the next entry.
        var completing = false
        while !stopping.load(ordering: .acquiring) {
            // Park only where the vCPU's state is whole: paused right after an access, a
            // snapshot or a migration would save the vCPU before that instruction, and the
            // restored guest would do it twice (a byte written to the serial port twice, a
            // read-to-clear register read twice). The KVM API document's way: enter once more
            // with `immediate_exit` set, which the pause's kick did, so that entry completes the
            // access and returns at once.
            if !completing, gate.checkpoint() { continue }
            let exit: VCPUExit
            do {
                exit = try vcpu.run()
            } catch {
                exits.report(.failure("vCPU \(id): \(error)"))
                return
            }
            completing = false
            // Writes KVM queued instead of exiting happened before this exit: devices see them first.
            vcpu.drainCoalescedWrites { write in
                (write.isPortIO ? pio : mmio).write(address: write.address, size: write.size, value: write.value)
            }
            switch exit {
            case .ioIn(let port, let data):
                for i in 0..<data.count { data.set(pio.readOrAllOnes(address: UInt64(port), size: data.size), at: i) }
                completing = true
            case .ioOut(let port, let data):
                for i in 0..<data.count { pio.write(address: UInt64(port), size: data.size, value: data.value(at: i)) }
                completing = true
            case .mmioRead(let address, let data):
                data.set(mmio.readOrAllOnes(address: address, size: data.size))
                completing = true
            case .mmioWrite(let address, let data):
                mmio.write(address: address, size: data.size, value: data.value)
                completing = true
            case .interrupted, .interruptWindowOpen, .ioapicEOI:
                continue
            case .shutdown:
                logger.warning("vCPU \(id): triple fault (\(Self.faultState(of: vcpu))); resetting the VM")
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

