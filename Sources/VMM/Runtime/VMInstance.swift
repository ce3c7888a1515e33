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
    let gate: PauseGate
    private let watcher: HostThread?
    /// What keeps a restored VM's memory coming in (on-demand restore), if anything.
    let memoryRestoration: MemorySnapshotIO.Restoration?

    private init(built: BuiltVM, gate: PauseGate, watcher: HostThread?, memoryRestoration: MemorySnapshotIO.Restoration?) {
        self.built = built
        self.gate = gate
        self.watcher = watcher
        self.memoryRestoration = memoryRestoration
    }

    /// Builds the VM from `config` and starts it; `onStop` runs on the watcher thread with
    /// the first reason the VM stopped (guest power-off, reset, failure, or ``VMExitReason/requested``).
    /// With `seccomp` set, each thread installs its filter before doing any work: the event
    /// loop before its first wait, each vCPU before its first `KVM_RUN`.
    /// With `keptBackends` (an in-place reboot), vhost-user devices use the stopped machine's
    /// back-end connections.
    static func start(config: VMConfig, hypervisor: KVMHypervisor, logger: Logger, seccomp: SeccompAction? = nil,
                      keptBackends: KeptVhostUserBackends? = nil,
                      onStop: @escaping @Sendable (VMExitReason) -> Void) throws -> VMInstance {
        let exits = try ExitSignal()
        let events = try EventManager()
        let built = try VMBuilder(hypervisor: hypervisor, logger: logger, keptBackends: keptBackends).build(config, events: events, exits: exits)
        return try launch(built, paused: false, memoryRestoration: nil, logger: logger, seccomp: seccomp, onStop: onStop)
    }

    /// Builds a VM from a snapshot's configuration, puts the snapshot's memory and state into it
    /// and starts it paused (`vm.restore`, `--restore`); the caller resumes it.
    static func restore(_ snapshot: LoadedSnapshot, onDemand: Bool, prefault: Bool, hypervisor: KVMHypervisor, logger: Logger,
                        seccomp: SeccompAction? = nil, onStop: @escaping @Sendable (VMExitReason) -> Void) throws -> VMInstance {
        let exits = try ExitSignal()
        let events = try EventManager()
        // The devices go where the snapshot says they were (a hot-added one is built with the
        // boot ones here, in another order than it was allocated).
        let placements = try DeviceManagerSection.placements(in: snapshot.tree)
        let built = try VMBuilder(hypervisor: hypervisor, logger: logger).build(snapshot.config, events: events, exits: exits, restoring: true,
                                                                                placements: placements,
                                                                                memoryState: try VMSnapshotter.memoryState(snapshot.tree))
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
    /// around what was prepared when it came (the source's memory and state replace what a
    /// boot would load).
    static func buildForMigration(_ config: VMConfig, prepared: VMBuilder.PreparedMachine, placements: [String: DevicePlacement],
                                  hypervisor: KVMHypervisor, logger: Logger) throws -> BuiltVM {
        let exits = try ExitSignal()
        let events = try EventManager()
        return try VMBuilder(hypervisor: hypervisor, logger: logger).build(config, events: events, exits: exits, prepared: prepared, placements: placements)
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
        built.cpus.launch(VCPUSet.Runner(pio: built.pio, mmio: built.mmio, exits: exits, gate: gate, logger: logger, seccomp: seccomp))
        let watcher = try? HostThread(name: "ch-vm-watch") {
            // A failure is in `exits` already: the wait below returns it at once.
            _ = ThreadFilters.install(.watcher, action: seccomp, thread: "VM watcher", exits: exits)
            onStop(exits.wait())
        }
        return VMInstance(built: built, gate: gate, watcher: watcher, memoryRestoration: memoryRestoration)
    }

    /// Stops the machine: parks every vCPU between guest entries and the device event loop
    /// between rounds, so no device touches guest memory or its backends until `resume()`.
    /// Returns whether all parked within a second.
    func pause() -> Bool {
        gate.close()
        built.cpus.kickAll()
        try? built.events.wake()
        let parked = gate.waitUntilParked(built.cpus.runningCount + 1, timeoutMilliseconds: 1000)
        // Requests the disks handed to io_uring finish now, while nothing else runs.
        for device in built.deviceManager.devices { device.drain?() }
        return parked
    }

    /// Lets the vCPUs and the devices run again.
    func resume() {
        gate.open()
    }

    /// Stops the vCPUs, the device event loop and host input, and puts the terminal back.
    /// Safe to call more than once and from the watcher's callback. With `keeping` (an
    /// in-place reboot), the vhost-user devices' back-end connections go there instead of
    /// being closed.
    func stop(reason: VMExitReason = .requested, keeping: KeptVhostUserBackends? = nil) {
        built.exits.report(reason)
        // Parked vCPUs and the event loop end when the gate opens, without one more guest entry
        // or round of device work: after a migration the destination owns the guest (a count
        // printed here as well would be printed twice) and its disks.
        built.cpus.requestStop()
        built.events.requestStop()
        gate.open()
        built.cpus.stopAll()
        memoryRestoration?.stop()
        built.events.stop()
        built.vsock?.close()
        for pmem in built.pmems { pmem.close() }
        for device in built.deviceManager.devices {
            if let keeping, let detach = device.detachBackend {
                if let kept = detach() { keeping.keep(kept.connection, socket: kept.socket) }
            } else {
                device.onStop?()
            }
        }
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

extension VMInstance {
    /// vCPU hotplug as Cloud Hypervisor's `CpuManager::resize` does it: growing starts the
    /// new vCPUs and marks them inserting, shrinking marks the highest ones removing (their
    /// threads stop when the guest ejects them); either way the Generic Event Device's CPU
    /// cause is notified. Returns whether anything changed.
    ///
    /// - Throws: a ``VMMError`` while an earlier removal waits for the guest's ejection, when
    ///   a vCPU cannot be made or started, or when the GED's interrupt fails.
    func resizeVCPUs(to desired: Int) throws -> Bool {
        let controller = built.cpuHotplug.controller
        let present = built.cpus.presentCount
        guard desired != present else { return false }
        let pending = controller.pendingRemoval
        guard pending.isEmpty else {
            throw VMMError(description: "vCPU \(pending.map(String.init).joined(separator: ", ")) is still being removed (the guest has not ejected it)")
        }
        if desired > present {
            for id in try built.cpus.grow(to: desired) { controller.insert(id) }
        } else {
            for id in desired..<present { controller.markForRemoval(UInt32(id)) }
        }
        try built.cpuHotplug.ged.notify(.cpuHotplug)
        return true
    }
}
