import GuestMemory
import HostSystem
import Hypervisor
import Logging
import Seccomp

/// One booted VM: its devices' event loop, one thread per vCPU, and a watcher that reports
/// why it stopped. Built and started by ``start(config:hypervisor:logger:seccomp:onStop:)``; paused,
/// resumed and stopped by the controller.
final class VMInstance: Sendable {
    let built: BuiltVM
    let loops: [VCPULoop]
    let gate: PauseGate
    private let threads: [HostThread]
    private let watcher: HostThread?
    /// What keeps a restored VM's memory coming in (on-demand restore), if anything.
    let memoryRestoration: MemorySnapshotIO.Restoration?

    private init(built: BuiltVM, loops: [VCPULoop], gate: PauseGate, threads: [HostThread], watcher: HostThread?,
                 memoryRestoration: MemorySnapshotIO.Restoration?) {
        self.built = built
        self.loops = loops
        self.gate = gate
        self.threads = threads
        self.watcher = watcher
        self.memoryRestoration = memoryRestoration
    }

    /// Builds the VM from `config` and starts it; `onStop` runs on the watcher thread with
    /// the first reason the VM stopped (guest power-off, reset, failure, or ``VMExitReason/requested``).
    /// With `seccomp` set, each thread installs its filter before doing any work: the event
    /// loop before its first wait, each vCPU before its first `KVM_RUN`.
    static func start(config: VMConfig, hypervisor: KVMHypervisor, logger: Logger, seccomp: SeccompAction? = nil,
                      onStop: @escaping @Sendable (VMExitReason) -> Void) throws -> VMInstance {
        let exits = try ExitSignal()
        let events = try EventManager()
        let built = try VMBuilder(hypervisor: hypervisor, logger: logger).build(config, events: events, exits: exits)
        return try launch(built, paused: false, memoryRestoration: nil, logger: logger, seccomp: seccomp, onStop: onStop)
    }

    /// Builds a VM from a snapshot's configuration, puts the snapshot's memory and state into it
    /// and starts it paused (`vm.restore`, `--restore`); the caller resumes it.
    static func restore(_ snapshot: LoadedSnapshot, onDemand: Bool, prefault: Bool, hypervisor: KVMHypervisor, logger: Logger,
                        seccomp: SeccompAction? = nil, onStop: @escaping @Sendable (VMExitReason) -> Void) throws -> VMInstance {
        let exits = try ExitSignal()
        let events = try EventManager()
        let built = try VMBuilder(hypervisor: hypervisor, logger: logger).build(snapshot.config, events: events, exits: exits, restoring: true)
        let restoration: MemorySnapshotIO.Restoration
        do {
            restoration = try VMSnapshotter.restore(snapshot, into: built, onDemand: onDemand, prefault: prefault)
        } catch {
            built.devices.serialHost?.restore()
            built.console?.host.restore()
            throw error
        }
        return try launch(built, paused: true, memoryRestoration: restoration, logger: logger, seccomp: seccomp, onStop: onStop)
    }

    /// Builds, without starting it, the machine a live migration's configuration describes
    /// (`restoring`: the source's memory and state replace what a boot would load).
    static func buildForMigration(_ config: VMConfig, memory: GuestMemory, hypervisor: KVMHypervisor,
                                  logger: Logger) throws -> BuiltVM {
        let exits = try ExitSignal()
        let events = try EventManager()
        return try VMBuilder(hypervisor: hypervisor, logger: logger).build(config, events: events, exits: exits, restoring: true,
                                                                          memory: memory)
    }

    /// Starts, paused, a machine a live migration filled with the source's memory and state.
    static func adopt(_ built: BuiltVM, logger: Logger, seccomp: SeccompAction?,
                      onStop: @escaping @Sendable (VMExitReason) -> Void) throws -> VMInstance {
        try launch(built, paused: true, memoryRestoration: nil, logger: logger, seccomp: seccomp, onStop: onStop)
    }

    /// Starts the event loop, one thread per vCPU and the watcher; with `paused`, every one of
    /// them parks at the gate before touching the guest.
    private static func launch(_ built: BuiltVM, paused: Bool, memoryRestoration: MemorySnapshotIO.Restoration?, logger: Logger,
                               seccomp: SeccompAction?, onStop: @escaping @Sendable (VMExitReason) -> Void) throws -> VMInstance {
        let exits = built.exits
        let events = built.events
        // One gate for the vCPUs and the device event loop: a pause stops the whole machine.
        let gate = PauseGate()
        if paused { gate.close() }
        do {
            try events.start(name: "ch-event-loop", gate: gate) {
                ThreadFilters.install(.eventLoop, action: seccomp, thread: "event loop", exits: exits)
            }
        } catch {
            built.devices.serialHost?.restore()
            built.console?.host.restore()
            throw error
        }
        let loops = built.vcpus.map { VCPULoop(vcpu: $0, pio: built.pio, mmio: built.mmio, exits: exits, gate: gate, logger: logger) }
        var threads: [HostThread] = []
        for loop in loops {
            do {
                threads.append(try HostThread(name: "vcpu\(loop.vcpu.id)") {
                    guard ThreadFilters.install(.vcpu, action: seccomp, thread: "vCPU \(loop.vcpu.id)", exits: exits) else { return }
                    loop.run()
                })
            } catch {
                exits.report(.failure("cannot start vCPU \(loop.vcpu.id): \(error)"))
                break
            }
        }
        let watcher = try? HostThread(name: "ch-vm-watch") {
            // A failure is in `exits` already: the wait below returns it at once.
            _ = ThreadFilters.install(.watcher, action: seccomp, thread: "VM watcher", exits: exits)
            onStop(exits.wait())
        }
        return VMInstance(built: built, loops: loops, gate: gate, threads: threads, watcher: watcher,
                          memoryRestoration: memoryRestoration)
    }

    /// Stops the machine: parks every vCPU between guest entries and the device event loop
    /// between rounds, so no device touches guest memory or its backends until `resume()`.
    /// Returns whether all parked within a second.
    func pause() -> Bool {
        gate.close()
        for loop in loops { loop.kick() }
        try? built.events.wake()
        return gate.waitUntilParked(loops.count + 1, timeoutMilliseconds: 1000)
    }

    /// Lets the vCPUs and the devices run again.
    func resume() {
        gate.open()
    }

    /// Stops the vCPUs, the device event loop and host input, and puts the terminal back.
    /// Safe to call more than once and from the watcher's callback.
    func stop(reason: VMExitReason = .requested) {
        built.exits.report(reason)
        for loop in loops { loop.stop() }
        gate.open()
        for thread in threads { thread.join() }
        memoryRestoration?.stop()
        built.events.stop()
        built.vsock?.close()
        for pmem in built.pmems { pmem.close() }
        built.devices.serialInput?.stop()
        built.console?.input?.stop()
        built.devices.serialHost?.restore()
        built.console?.host.restore()
    }

    /// Waits for the watcher to have reported (after ``stop(reason:)`` or a guest exit).
    func joinWatcher() {
        watcher?.join()
    }
}
