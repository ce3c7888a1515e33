import DeviceModel
import Hypervisor
import HostSystem
import Logging
import Seccomp
import Synchronization

/// The VM's vCPUs for its whole life, as Cloud Hypervisor's `CpuManager` keeps them: the
/// ones present (running a thread once the VM is launched), and the ones a guest ejected,
/// whose KVM file descriptors stay (KVM cannot destroy a vCPU) and are used again by the
/// next grow.
///
/// vCPU `n` is slot `n`; ``present`` lists the present ones in order, which is what a snapshot
/// or a migration saves (the controller refuses those while an ejection is pending, so the
/// present vCPUs are then always `0 ..< count`).
final class VCPUSet: @unchecked Sendable {
    /// What a vCPU thread needs, known once the VM is launched.
    struct Runner: Sendable {
        let pio: Bus
        let mmio: Bus
        let exits: ExitSignal
        let gate: PauseGate
        let logger: Logger
        let seccomp: SeccompAction?
    }

    /// Creates vCPU `id` (`existing` nil) or sets an ejected one up again, with the VM's
    /// CPUID, MSRs, FPU and LAPIC wiring.
    typealias Configure = @Sendable (_ id: UInt32, _ existing: KVMVCPU?) throws -> KVMVCPU

    private struct Slot {
        var vcpu: KVMVCPU
        var present: Bool
        var loop: VCPULoop?
        var thread: HostThread?
    }

    private struct Contents {
        var slots: [Slot]
        var runner: Runner?
    }

    /// The most vCPUs the VM can have (`max_vcpus`).
    let maxVCPUs: Int
    private let configure: Configure
    private let contents: Mutex<Contents>

    /// The boot vCPUs, all present, and room for `maxVCPUs`.
    init(boot vcpus: [KVMVCPU], maxVCPUs: Int, configure: @escaping Configure) {
        self.maxVCPUs = maxVCPUs
        self.configure = configure
        contents = Mutex(Contents(slots: vcpus.map { Slot(vcpu: $0, present: true) }, runner: nil))
    }

    /// The present vCPUs, in id order.
    var present: [KVMVCPU] { contents.withLock { $0.slots.filter(\.present).map(\.vcpu) } }

    /// How many vCPUs are present.
    var presentCount: Int { contents.withLock { $0.slots.count(where: \.present) } }

    /// How many vCPU threads run (those a pause must see parked).
    var runningCount: Int { contents.withLock { $0.slots.count { $0.thread != nil } } }

    /// Starts one thread per present vCPU; each installs its seccomp filter first and then
    /// passes the pause gate before its first guest entry.
    func launch(_ runner: Runner) {
        contents.withLock { contents in
            contents.runner = runner
            for index in contents.slots.indices where contents.slots[index].present {
                guard Self.startThread(&contents.slots[index], runner: runner) else { break }
            }
        }
    }

    /// Makes vCPUs present, lowest ids first, until `desired` are, creating them or using
    /// ejected ones again, and starts their threads. Returns the ids added.
    func grow(to desired: Int) throws -> [UInt32] {
        try contents.withLock { (contents: inout Contents) throws -> [UInt32] in
            guard let runner = contents.runner else { throw VMMError(description: "the VM's vCPUs are not running") }
            guard desired <= maxVCPUs else { throw VMMError(description: "desired_vcpus \(desired) is above max_vcpus \(maxVCPUs)") }
            var added: [UInt32] = []
            var count = contents.slots.count(where: \.present)
            for id in 0..<maxVCPUs where count < desired {
                if id < contents.slots.count {
                    guard !contents.slots[id].present else { continue }
                    contents.slots[id].vcpu = try configure(UInt32(id), contents.slots[id].vcpu)
                } else {
                    contents.slots.append(Slot(vcpu: try configure(UInt32(id), nil), present: false))
                }
                contents.slots[id].present = true
                guard Self.startThread(&contents.slots[id], runner: runner) else {
                    contents.slots[id].present = false
                    throw VMMError(description: "cannot start a thread for vCPU \(id)")
                }
                added.append(UInt32(id))
                count += 1
            }
            return added
        }
    }

    /// Stops vCPU `id`'s thread and keeps its file descriptor for a later grow (the guest
    /// ejected it). Runs on the ejecting vCPU's thread and waits for the ejected one to end.
    func eject(_ id: UInt32) {
        let taken = contents.withLock { contents -> (KVMVCPU, VCPULoop?, HostThread?)? in
            guard Int(id) < contents.slots.count else { return nil }
            defer {
                contents.slots[Int(id)].present = false
                contents.slots[Int(id)].loop = nil
                contents.slots[Int(id)].thread = nil
            }
            return (contents.slots[Int(id)].vcpu, contents.slots[Int(id)].loop, contents.slots[Int(id)].thread)
        }
        guard let (vcpu, loop, thread) = taken else { return }
        loop?.stop()
        thread?.join()
        vcpu.threadEnded()
    }

    /// Kicks every running vCPU out of the guest (to park at a closed gate).
    func kickAll() {
        for loop in contents.withLock({ $0.slots.compactMap(\.loop) }) { loop.kick() }
    }

    /// Asks every vCPU thread to end without waiting: a vCPU parked at the pause gate then ends
    /// when the gate opens, without entering the guest again.
    func requestStop() {
        for loop in contents.withLock({ $0.slots.compactMap(\.loop) }) { loop.stop() }
    }

    /// Stops every vCPU thread and waits for them to end.
    func stopAll() {
        let running = contents.withLock { contents -> [(VCPULoop, HostThread)] in
            defer {
                for index in contents.slots.indices {
                    contents.slots[index].loop = nil
                    contents.slots[index].thread = nil
                }
                contents.runner = nil
            }
            return contents.slots.compactMap { slot in slot.loop.flatMap { loop in slot.thread.map { (loop, $0) } } }
        }
        for (loop, _) in running { loop.stop() }
        for (_, thread) in running { thread.join() }
    }

    /// Starts `slot`'s thread; on failure reports it to the VM's exit signal and returns false.
    private static func startThread(_ slot: inout Slot, runner: Runner) -> Bool {
        let loop = VCPULoop(vcpu: slot.vcpu, pio: runner.pio, mmio: runner.mmio, exits: runner.exits, gate: runner.gate,
                            logger: runner.logger)
        do {
            let id = slot.vcpu.id
            let (seccomp, exits) = (runner.seccomp, runner.exits)
            slot.thread = try HostThread(name: "vcpu\(id)") {
                guard ThreadFilters.install(.vcpu, action: seccomp, thread: "vCPU \(id)", exits: exits) else { return }
                loop.run()
            }
            slot.loop = loop
            return true
        } catch {
            runner.exits.report(.failure("cannot start vCPU \(slot.vcpu.id): \(error)"))
            return false
        }
    }
}
