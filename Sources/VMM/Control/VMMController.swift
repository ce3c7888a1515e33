#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import CLinux
import GuestMemory
import HostSystem
import Hypervisor
import Logging
import Seccomp
import Synchronization

/// The VMM's lifecycle: the one VM it manages, its state, and the actions the REST API and
/// the command line ask for, with Cloud Hypervisor's states and transitions.
///
/// Actions run on the caller's thread and return when done. The process's main thread
/// runs ``run()``, which reboots the VM when the guest resets and returns when the VMM
/// should exit (the guest powered off, a termination signal, `vmm.shutdown`, a failure).
public final class VMMController: VMMControl {
    /// Why ``run()`` returned.
    public enum Outcome: Equatable, Sendable {
        /// The guest powered off, a signal or `vmm.shutdown` stopped the VMM: exit status 0.
        case finished(String)
        /// The VM failed: exit status 1, the text says why.
        case failed(String)
    }

    struct Slot {
        var config: VMConfig?
        var state: VMState = .created
        var instance: VMInstance?
        /// Descriptors passed with API requests (SCM_RIGHTS) that the configuration names,
        /// by number; closed when the configuration lets go of them.
        var passed: [Int32: OwnedFileDescriptor] = [:]
        /// A live migration of this VM is under way (vm.send-migration).
        var migrating = false
        /// The Landlock ruleset made when the VM was created with `landlock_enable`.
        var sandbox: LandlockSandbox?
    }

    enum Event: Sendable {
        case vmStopped(ObjectIdentifier, VMExitReason)
        case vmmShutdown
        case signal(Int32)
        case failure(String)
        case migrated
        /// The main thread enforces a new VM's Landlock ruleset (made on an API worker).
        case sandbox(LandlockSandbox)
        /// The guest of a VM ejected a PCI device (segment, device number): the main thread releases it.
        case ejected(ObjectIdentifier, UInt16, UInt8)
    }

    let hypervisor: KVMHypervisor
    let logger: Logger
    let monitor: EventMonitor?
    let slot = Mutex(Slot())
    private let mailbox = Mutex<[Event]>([])
    private let wakeup: EventFD
    private let signals: OwnedFileDescriptor
    private let signalLoop: EventManager
    private let seccomp: SeccompAction?
    private let releasesStartupPages: Bool

    /// A controller with no VM yet. Blocks the termination signals in the calling thread
    /// (threads started later inherit that) and receives them through a signalfd.
    /// With `seccomp` set, the signal thread and every VM thread install their filters; with
    /// `landlock` (the command line's `--landlock`) the signal thread drops all file access.
    /// With `releaseStartupPages`, once a VM has booted or been restored the process drops
    /// from its page tables the clean pages of the files it maps (``ResidentPages``): what the
    /// start-up touched and never uses again stops counting in its resident set.
    public init(logger: Logger, monitor: EventMonitor? = nil, seccomp: SeccompAction? = nil, landlock: Bool = false,
                releaseStartupPages: Bool = false) throws {
        releasesStartupPages = releaseStartupPages
        try KickSignal.install()
        let signals = clinux_signalfd_termination()
        guard signals >= 0 else { throw VMMError(description: "\(SystemError.current("signalfd"))") }
        self.signals = OwnedFileDescriptor(adopting: signals)
        hypervisor = try KVMHypervisor()
        self.logger = logger
        self.monitor = monitor
        self.seccomp = seccomp
        wakeup = try EventFD(nonBlocking: false)
        signalLoop = try EventManager()
        let descriptor = self.signals.rawValue
        try signalLoop.add(descriptor, events: [.readable]) { [weak self] _ in
            let number = clinux_read_signalfd(descriptor)
            if number > 0 { self?.post(.signal(number)) }
        }
        try signalLoop.start(name: "ch-signals") { [weak self] in
            if landlock {
                do {
                    try Landlock.denyAllFileAccess()
                } catch {
                    self?.post(.failure("the signal thread: \(error)"))
                    return false
                }
            }
            guard let seccomp else { return true }
            do {
                try Seccomp.install(for: .signalHandler, action: seccomp)
                return true
            } catch {
                self?.post(.failure("the signal thread: \(error)"))
                return false
            }
        }
        monitor?.emit(source: "vmm", event: "starting")
    }

    deinit {
        signalLoop.stop()
    }

    /// After a migration: makes ``run()`` stop the VM here and return.
    func migrated() { post(.migrated) }

    func post(_ event: Event) {
        mailbox.withLock { $0.append(event) }
        try? wakeup.signal()
    }

    private func nextEvent() -> Event {
        while true {
            if let event = mailbox.withLock({ $0.isEmpty ? nil : $0.removeFirst() }) { return event }
            _ = try? wakeup.read()
        }
    }

    // MARK: - The main thread

    /// Runs until the VMM should exit: reboots the VM when the guest resets, ends when the
    /// guest powers off (as Cloud Hypervisor does), on SIGINT/SIGTERM/SIGHUP, on `vmm.shutdown`
    /// and when the VM fails.
    public func run() -> Outcome {
        while true {
            switch nextEvent() {
            case .signal(let number):
                stopInstance(reason: .signal(number))
                finish()
                return .finished("stopped by signal \(number)")
            case .vmmShutdown:
                finish()
                return .finished("vmm.shutdown")
            case .migrated:
                // The destination owns the VM now; this VMM ends, as Cloud Hypervisor's does.
                stopInstance(reason: .requested)
                finish()
                return .finished("the VM migrated")
            case .failure(let reason):
                stopInstance(reason: .failure(reason))
                return .failed(reason)
            case .sandbox(let sandbox):
                do {
                    try sandbox.enter()
                } catch {
                    stopInstance(reason: .failure("\(error)"))
                    return .failed("the main thread: \(error)")
                }
            case let .ejected(id, segment, device):
                let instance = slot.withLock { $0.instance.flatMap { ObjectIdentifier($0) == id ? $0 : nil } }
                guard let removed = instance?.built.pciHotplug?.ejections.release(segment: segment, slot: device) else { continue }
                monitor?.emit(source: "vm", event: "device-removed", properties: ["id": removed.id, "bdf": removed.resources.pciBDF ?? ""])
            case let .vmStopped(id, reason):
                // Only the current instance's stop counts; one the control plane replaced is done.
                let current = slot.withLock { $0.instance.map(ObjectIdentifier.init) == id }
                guard current else { continue }
                logger.info("VM stopped: \(reason)")
                switch reason {
                case .reset:
                    if slot.withLock({ $0.migrating }) {
                        // The migration thread still reads the stopped VM: it fails on its next
                        // step and posts the reset again once it let go.
                        logger.info("the guest reset during a migration: rebooting once the migration stopped")
                        continue
                    }
                    do {
                        try rebootInPlace()
                    } catch {
                        stopInstance(reason: .failure("reboot: \(error)"))
                        return .failed("reboot failed: \(error)")
                    }
                case .shutdown:
                    stopInstance(reason: .shutdown)
                    slot.withLock { $0.state = .shutdown }
                    monitor?.emit(source: "vm", event: "shutdown")
                    finish()
                    return .finished("the guest shut down")
                case .failure(let text):
                    stopInstance(reason: reason)
                    return .failed(text)
                case .signal, .requested:
                    continue
                }
            }
        }
    }

    /// Ends the VMM as Cloud Hypervisor's `vmm_shutdown` does: stops a running VM
    /// (`vm:shutdown`), forgets it (`vm:deleted`), then `vmm:shutdown`.
    private func finish() {
        let (instance, hadConfig) = slot.withLock { slot -> (VMInstance?, Bool) in
            defer { slot = Slot() }
            return (slot.instance, slot.config != nil)
        }
        if let instance {
            instance.stop(reason: .requested)
            monitor?.emit(source: "vm", event: "shutdown")
        }
        if hadConfig { monitor?.emit(source: "vm", event: "deleted") }
        monitor?.emit(source: "vmm", event: "shutdown")
    }

    private func stopInstance(reason: VMExitReason) {
        let instance = slot.withLock { slot -> VMInstance? in
            defer { slot.instance = nil }
            return slot.instance
        }
        instance?.stop(reason: reason)
    }

    private func rebootInPlace() throws {
        logger.info("rebooting the VM")
        monitor?.emit(source: "vm", event: "rebooting")
        // The vhost-user back-ends stay connected across the reset (as under QEMU): the new
        // machine's devices take the old ones' connections; any left over close.
        let kept = KeptVhostUserBackends()
        defer { kept.closeRest() }
        try slot.withLock { (slot: inout Slot) throws in
            try slot.sandbox?.enter()
            slot.instance?.stop(reason: .reset, keeping: kept)
            // Another thread may still hold the stopped machine a moment (a failing migration):
            // its images' locks go now, not when the last holder lets go.
            slot.instance?.built.deviceManager.releaseLocks()
            slot.instance = nil
            guard let config = slot.config else { return }
            if !kept.sockets.isEmpty { logger.info("keeping the vhost-user back-end connection(s) at \(kept.sockets.joined(separator: ", "))") }
            slot.instance = try startInstance(config, keptBackends: kept)
            slot.state = .running
        }
        monitor?.emit(source: "vm", event: "rebooted")
    }

    private func startInstance(_ config: VMConfig, keptBackends: KeptVhostUserBackends? = nil) throws -> VMInstance {
        try watchedInstance { [hypervisor, logger, seccomp] onStop in
            try VMInstance.start(config: config, hypervisor: hypervisor, logger: logger, seccomp: seccomp, keptBackends: keptBackends, onStop: onStop)
        }
    }

    /// Builds (not starts) the machine a migration's configuration describes.
    func buildForMigration(_ config: VMConfig, prepared: VMBuilder.PreparedMachine, placements: [String: DevicePlacement]) throws -> BuiltVM {
        try VMInstance.buildForMigration(config, prepared: prepared, placements: placements, hypervisor: hypervisor, logger: logger)
    }

    /// Starts a machine a migration brought (restored, paused) and makes it this VMM's VM,
    /// resumed when the source ran it.
    func adoptMigrated(_ received: MigrationReceiver.Received, sandbox: LandlockSandbox?) throws {
        try slot.withLock { (slot: inout Slot) throws in
            guard slot.config == nil else {
                received.built.events.stop()
                throw VMMError(description: "a VM was created while the migration was received")
            }
            let instance = try watchedInstance { [logger, seccomp] onStop in
                try VMInstance.adopt(received.built, logger: logger, seccomp: seccomp, onStop: onStop)
            }
            slot.config = received.built.config
            slot.sandbox = sandbox
            slot.instance = instance
            slot.state = .paused
            if received.resume {
                instance.resume()
                slot.state = .running
            }
        }
    }

    /// A VM restored from `snapshot`, paused.
    func restoreInstance(_ snapshot: LoadedSnapshot, onDemand: Bool, prefault: Bool) throws -> VMInstance {
        try watchedInstance { [hypervisor, logger, seccomp] onStop in
            try VMInstance.restore(snapshot, onDemand: onDemand, prefault: prefault, hypervisor: hypervisor, logger: logger,
                                   seccomp: seccomp, onStop: onStop)
        }
    }

    /// Makes an instance whose stop is posted to the main thread's mailbox.
    private func watchedInstance(_ make: (@escaping @Sendable (VMExitReason) -> Void) throws -> VMInstance) throws -> VMInstance {
        let holder = Mutex<ObjectIdentifier?>(nil)
        let instance = try make { [weak self] reason in
            // The watcher may report before `holder` is set only if start failed; wait for it.
            var id: ObjectIdentifier?
            while id == nil {
                id = holder.withLock { $0 }
                if id == nil { sched_yield() }
            }
            self?.post(.vmStopped(id!, reason))
        }
        holder.withLock { $0 = ObjectIdentifier(instance) }
        let id = ObjectIdentifier(instance)
        instance.built.pciHotplug?.ejections.route { [weak self] segment, device in self?.post(.ejected(id, segment, device)) }
        return instance
    }

    // MARK: - VMMControl

    /// Version, pid and features.
    public func ping() -> VMMPingResponse {
        VMMPingResponse(buildVersion: VMMVersion.build, version: VMMVersion.cloudHypervisor, pid: Int64(getpid()), features: ["kvm"])
    }

    /// Stops the VM if one runs, then makes ``run()`` return.
    public func shutdownVMM() throws(ControlError) {
        post(.vmmShutdown)
    }

    /// Stores a validated configuration (state Created).
    public func create(_ config: VMConfig, descriptors: [OwnedFileDescriptor]) throws(ControlError) {
        if let absent = config.absentFeatures.first { throw .absentFeature(absent) }
        do { try config.validate() } catch { throw .invalidConfig(error.description) }
        let sandbox = try slot.withLock { (slot: inout Slot) throws(ControlError) -> LandlockSandbox? in
            guard slot.config == nil else { throw .vmAlreadyCreated }
            // Cloud Hypervisor's vm_create: the sandbox goes on before anything is opened.
            if config.landlockEnable {
                do throws(LandlockError) {
                    let sandbox = try LandlockSandbox(config: config, logger: logger)
                    try sandbox.enter()
                    slot.sandbox = sandbox
                } catch {
                    throw .failed(action: "vm.create", reason: error.description)
                }
            }
            slot.config = config
            slot.state = .created
            for descriptor in descriptors { slot.passed[descriptor.rawValue] = descriptor }
            return slot.sandbox
        }
        if let sandbox { post(.sandbox(sandbox)) }
    }

    /// Enforces the VM's Landlock ruleset on the calling thread before it opens anything for
    /// `action` (a no-op without `landlock_enable`, or when the thread did it already).
    func enterSandbox(_ slot: Slot, action: String) throws(ControlError) {
        do throws(LandlockError) {
            try slot.sandbox?.enter()
        } catch {
            throw .failed(action: action, reason: error.description)
        }
    }

    /// Builds and starts the VM (from Created or Shutdown).
    public func boot() throws(ControlError) {
        monitor?.emit(source: "vm", event: "booting")
        try slot.withLock { (slot: inout Slot) throws(ControlError) in
            guard let config = slot.config else { throw .vmNotCreated }
            guard slot.state == .created || slot.state == .shutdown else { throw .invalidState(action: "vm.boot", state: slot.state) }
            try enterSandbox(slot, action: "vm.boot")
            // A boot starts the serial and console files afresh (a reboot appends to them).
            for console in [config.serial, config.console] where console.mode == .file {
                if let path = console.file { _ = try? OwnedFileDescriptor(path: path, flags: O_WRONLY | O_CREAT | O_TRUNC) }
            }
            do {
                slot.instance = try startInstance(config)
            } catch {
                throw .failed(action: "vm.boot", reason: "\(error)")
            }
            slot.state = .running
        }
        monitor?.emit(source: "vm", event: "booted")
        releaseStartupPagesIfAsked()
    }

    /// Drops the clean file pages the start-up touched, when the controller was made to.
    func releaseStartupPagesIfAsked() {
        guard releasesStartupPages else { return }
        do throws(SystemError) {
            let released = try ResidentPages.releaseCleanFileMappings()
            logger.debug("released \(released.residentKiB) KiB of clean file pages from \(released.mappings) mappings")
        } catch {
            // Under Landlock /proc may be out of reach: the pages just stay mapped.
            logger.debug("clean file pages kept: \(error)")
        }
    }

    /// A VM being migrated belongs to the migration until it ends (Cloud Hypervisor hands the
    /// VM to its migration worker): actions that would change it are refused.
    static func refuseWhileMigrating(_ slot: Slot, _ action: String) throws(ControlError) {
        if slot.migrating { throw .failed(action: action, reason: "a live migration of the VM is under way") }
    }

    /// Stops the VM if it runs and forgets its configuration.
    public func delete() throws(ControlError) {
        try slot.withLock { (slot: inout Slot) throws(ControlError) in try Self.refuseWhileMigrating(slot, "vm.delete") }
        let instance = slot.withLock { slot -> VMInstance? in
            defer { slot = Slot() }
            return slot.instance
        }
        instance?.stop(reason: .requested)
        monitor?.emit(source: "vm", event: "deleted")
    }

    /// The configuration, the state, the RAM size and the device tree.
    public func info() throws(ControlError) -> VMInfo {
        try slot.withLock { (slot: inout Slot) throws(ControlError) -> VMInfo in
            guard var config = slot.config else { throw .vmNotCreated }
            // A pty's path exists once the VM runs; Cloud Hypervisor reports it as the `file`.
            if let built = slot.instance?.built {
                if let path = built.serialPTYPath { config.serial.file = path }
                if let path = built.consolePTYPath { config.console.file = path }
            }
            // Cloud Hypervisor's memory_actual_size: the RAM less what the balloon holds (as its driver
            // reports), plus what the guest plugged through virtio-mem.
            let ballooned = slot.instance?.built.balloon?.actualSize ?? 0
            let plugged = slot.instance?.built.virtioMem?.device.pluggedSize ?? 0
            let actual = (config.memory.size > ballooned ? config.memory.size - ballooned : 0) + plugged
            return VMInfo(config: config, state: slot.state, memoryActualSize: actual,
                          deviceTree: slot.instance?.built.deviceManager.deviceTree)
        }
    }

    /// The disks' and network devices' counters (Cloud Hypervisor's names).
    public func counters() throws(ControlError) -> [String: [String: UInt64]] {
        try slot.withLock { (slot: inout Slot) throws(ControlError) -> [String: [String: UInt64]] in
            guard slot.config != nil else { throw .vmNotCreated }
            guard let instance = slot.instance else { return [:] }
            return instance.built.deviceManager.counters()
        }
    }

    /// Parks every vCPU (Running → Paused).
    public func pause() throws(ControlError) {
        monitor?.emit(source: "vm", event: "pausing")
        try slot.withLock { (slot: inout Slot) throws(ControlError) in
            guard slot.config != nil else { throw .vmNotCreated }
            try Self.refuseWhileMigrating(slot, "vm.pause")
            guard slot.state == .running, let instance = slot.instance else { throw .invalidState(action: "vm.pause", state: slot.state) }
            guard instance.pause() else {
                instance.resume()
                throw .failed(action: "vm.pause", reason: "the vCPUs did not stop within a second")
            }
            slot.state = .paused
        }
        monitor?.emit(source: "vm", event: "paused")
    }

    /// Lets the vCPUs run again (Paused → Running).
    public func resume() throws(ControlError) {
        monitor?.emit(source: "vm", event: "resuming")
        try slot.withLock { (slot: inout Slot) throws(ControlError) in
            guard slot.config != nil else { throw .vmNotCreated }
            try Self.refuseWhileMigrating(slot, "vm.resume")
            guard slot.state == .paused, let instance = slot.instance else { throw .invalidState(action: "vm.resume", state: slot.state) }
            instance.resume()
            slot.state = .running
        }
        monitor?.emit(source: "vm", event: "resumed")
    }

    /// Stops the VM (Running or Paused → Shutdown); the VMM keeps running.
    public func shutdown() throws(ControlError) {
        let instance = try slot.withLock { (slot: inout Slot) throws(ControlError) -> VMInstance in
            guard slot.config != nil else { throw .vmNotCreated }
            try Self.refuseWhileMigrating(slot, "vm.shutdown")
            guard slot.state == .running || slot.state == .paused, let instance = slot.instance else {
                throw .invalidState(action: "vm.shutdown", state: slot.state)
            }
            slot.instance = nil
            slot.state = .shutdown
            return instance
        }
        instance.stop(reason: .requested)
        monitor?.emit(source: "vm", event: "shutdown")
    }

    /// Resets the VM: stops it and boots it again from its configuration.
    public func reboot() throws(ControlError) {
        try slot.withLock { (slot: inout Slot) throws(ControlError) in
            guard slot.config != nil else { throw .vmNotCreated }
            try Self.refuseWhileMigrating(slot, "vm.reboot")
            guard slot.state == .running || slot.state == .paused, slot.instance != nil else {
                throw .invalidState(action: "vm.reboot", state: slot.state)
            }
        }
        do {
            try rebootInPlace()
        } catch {
            slot.withLock { $0.state = .shutdown }
            throw .failed(action: "vm.reboot", reason: "\(error)")
        }
    }

    /// Presses the ACPI power button.
    public func powerButton() throws(ControlError) {
        try slot.withLock { (slot: inout Slot) throws(ControlError) in
            guard slot.config != nil else { throw .vmNotCreated }
            guard slot.state == .running, let instance = slot.instance else { throw .invalidState(action: "vm.power-button", state: slot.state) }
            guard let button = instance.built.powerButton else { throw .unsupported(action: "vm.power-button") }
            button()
        }
    }
}
