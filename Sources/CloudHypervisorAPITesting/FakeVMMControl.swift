// A VMMControl with no VM behind it: Cloud Hypervisor's lifecycle state machine
// (vmm/src/vm.rs's transitions, vmm/src/lib.rs's checks), for API tests, fuzzing and benchmarks.
import Glibc
import HostSystem
import Synchronization
import VMM

/// A scripted VMM: keeps a configuration and a state, follows Cloud Hypervisor's transitions,
/// and records every call. Thread-safe.
public final class FakeVMMControl: VMMControl {
    /// What the fake remembers.
    public struct Snapshot: Sendable, Equatable {
        /// The created configuration, if any.
        public var config: VMConfig?
        /// The state, when a VM is created.
        public var state: VMState?
        /// Whether `vmm.shutdown` was asked for.
        public var vmmShutdownRequested = false
        /// The calls made, by name (`"boot"`, `"info"`, ...), in order.
        public var calls: [String] = []
        /// For each call that took passed descriptors (`create`, `addNet`): how many came and
        /// whether each was open when the call ran.
        public var descriptors: [(call: String, open: [Bool])] = []

        /// Compares the recorded fields.
        public static func == (a: Snapshot, b: Snapshot) -> Bool {
            a.config == b.config && a.state == b.state && a.vmmShutdownRequested == b.vmmShutdownRequested && a.calls == b.calls
                && a.descriptors.map(\.call) == b.descriptors.map(\.call) && a.descriptors.map(\.open) == b.descriptors.map(\.open)
        }
    }

    private let memory = Mutex(Snapshot())
    /// Every action succeeds whatever the state (for fuzzing: any 5xx is then a server bug).
    public let permissive: Bool
    /// How long `boot` and `reboot` take, as a real boot does (microseconds).
    public let bootDelayMicroseconds: UInt32

    /// Creates a fake with no VM.
    public init(permissive: Bool = false, bootDelayMicroseconds: UInt32 = 0) {
        self.permissive = permissive
        self.bootDelayMicroseconds = bootDelayMicroseconds
    }

    /// What the fake holds now.
    public var snapshot: Snapshot { memory.withLock { $0 } }

    /// The state, or nil when no VM is created.
    public var state: VMState? { memory.withLock { $0.state } }

    public func ping() -> VMMPingResponse {
        record("ping")
        return VMMPingResponse(buildVersion: VMMVersion.build, version: VMMVersion.cloudHypervisor, pid: Int64(getpid()), features: [])
    }

    public func shutdownVMM() throws(ControlError) {
        memory.withLock {
            $0.calls.append("shutdownVMM")
            $0.vmmShutdownRequested = true
            $0.state = $0.config == nil ? nil : .shutdown
        }
    }

    public func create(_ config: VMConfig, descriptors: [OwnedFileDescriptor]) throws(ControlError) {
        note("create", descriptors)
        if let absent = config.absentFeatures.first { throw .absentFeature(absent) }
        do { try config.validate() } catch { throw .invalidConfig(error.description) }
        try transition("create") { (snapshot: inout Snapshot) throws(ControlError) in
            if snapshot.config != nil, !permissive { throw .vmAlreadyCreated }
            snapshot.config = config
            snapshot.state = .created
        }
    }

    public func boot() throws(ControlError) {
        if bootDelayMicroseconds > 0 { usleep(bootDelayMicroseconds) }
        try move("boot", action: "vm.boot", from: [.created, .shutdown], to: .running)
    }

    public func delete() throws(ControlError) {
        // Cloud Hypervisor answers vm.delete with success when there is nothing to delete.
        memory.withLock {
            $0.calls.append("delete")
            $0.config = nil
            $0.state = nil
        }
    }

    public func info() throws(ControlError) -> VMInfo {
        try transition("info") { (snapshot: inout Snapshot) throws(ControlError) -> VMInfo in
            guard let config = snapshot.config, let state = snapshot.state else {
                if permissive {
                    var config = VMConfig()
                    config.payload = PayloadConfig(kernel: "/nonexistent/vmlinux")
                    return VMInfo(config: config, state: .created, memoryActualSize: config.memory.size)
                }
                throw .vmNotCreated
            }
            let tree = ["_rng": DeviceNode(id: "_rng", pciBDF: "0000:00:01.0")]
            return VMInfo(config: config, state: state, memoryActualSize: config.memory.size, deviceTree: tree)
        }
    }

    public func counters() throws(ControlError) -> [String: [String: UInt64]] {
        try transition("counters") { (snapshot: inout Snapshot) throws(ControlError) -> [String: [String: UInt64]] in
            if !permissive {
                guard let state = snapshot.state else { throw .vmNotCreated }
                guard state == .running || state == .paused else { throw .invalidState(action: "vm.counters", state: state) }
            }
            return ["_rng": ["read_bytes": 4096, "read_ops": 1]]
        }
    }

    public func pause() throws(ControlError) {
        try move("pause", action: "vm.pause", from: [.running], to: .paused)
    }

    public func resume() throws(ControlError) {
        try move("resume", action: "vm.resume", from: [.paused], to: .running)
    }

    public func shutdown() throws(ControlError) {
        try move("shutdown", action: "vm.shutdown", from: [.running, .paused], to: .shutdown)
    }

    public func reboot() throws(ControlError) {
        if bootDelayMicroseconds > 0 { usleep(bootDelayMicroseconds) }
        try move("reboot", action: "vm.reboot", from: [.running, .paused], to: .running)
    }

    /// A paused VM's snapshot: recorded, the state stays Paused (no files are written).
    public func snapshot(destinationURL: String) throws(ControlError) {
        try move("snapshot", action: "vm.snapshot", from: [.paused], to: nil)
    }

    /// A restore when no VM exists: a VM with the default configuration and a kernel payload,
    /// Paused (Running with `resume`); the snapshot itself is not read.
    public func restore(_ config: RestoreConfig, descriptors: [OwnedFileDescriptor]) throws(ControlError) {
        note("restore", descriptors)
        try transition("restore") { (snapshot: inout Snapshot) throws(ControlError) in
            if snapshot.config != nil, !permissive { throw .vmAlreadyCreated }
            // What a snapshot's config.json would hold: at least a payload (vm.info requires one).
            var restored = VMConfig()
            restored.payload = PayloadConfig(kernel: "/snapshot/vmlinux")
            snapshot.config = restored
            snapshot.state = config.resume ? .running : .paused
        }
    }

    /// A migration of a running or paused VM: recorded; the state stays (the real control
    /// answers once the migration started, and the VM leaves when it ends).
    public func sendMigration(_ request: SendMigrationData) throws(ControlError) {
        try move("sendMigration", action: "vm.send-migration", from: [.running, .paused], to: nil)
    }

    /// A received migration when no VM exists: a VM with the default configuration and a
    /// kernel payload, Running; no socket is opened.
    public func receiveMigration(_ request: ReceiveMigrationData) throws(ControlError) {
        note("receiveMigration", [])
        try transition("receiveMigration") { (snapshot: inout Snapshot) throws(ControlError) in
            if snapshot.config != nil, !permissive { throw .vmAlreadyCreated }
            var received = VMConfig()
            received.payload = PayloadConfig(kernel: "/migrated/vmlinux")
            snapshot.config = received
            snapshot.state = .running
        }
    }

    public func powerButton() throws(ControlError) {
        // The guest decides what the button does; the state stays.
        try move("powerButton", action: "vm.power-button", from: [.running], to: nil)
    }

    public func resize(_ request: VMResize) throws(ControlError) {
        try transition("resize") { (snapshot: inout Snapshot) throws(ControlError) in
            guard let config = snapshot.config else {
                if permissive { return }
                throw .vmNotCreated
            }
            // vCPU hotplug: any count from 1 to max_vcpus becomes boot_vcpus, as the real controller does.
            if let vcpus = request.desiredVCPUs, !permissive {
                guard vcpus >= 1, vcpus <= config.cpus.maxVCPUs else {
                    throw .invalidConfig("desired_vcpus \(vcpus) is outside 1...\(config.cpus.maxVCPUs) (max_vcpus)")
                }
                snapshot.config?.cpus.bootVCPUs = vcpus
            }
            // The balloon's size goes into the configuration, as the real controller's does.
            if let balloon = request.desiredBalloon, config.balloon != nil, !permissive {
                snapshot.config?.balloon?.size = balloon
            }
        }
    }

    public func addDisk(_ config: DiskConfig) throws(ControlError) -> PciDeviceInfo? {
        try added("addDisk") { (vm: inout VMConfig) in vm.disks = (vm.disks ?? []) + [config] }
    }

    public func addNet(_ config: NetConfig, descriptors: [OwnedFileDescriptor]) throws(ControlError) -> PciDeviceInfo? {
        note("addNet", descriptors)
        var device = config
        device.fds = descriptors.isEmpty ? nil : descriptors.map(\.rawValue)
        return try added("addNet") { (vm: inout VMConfig) in vm.net = (vm.net ?? []) + [device] }
    }

    public func addVsock(_ config: VsockConfig) throws(ControlError) -> PciDeviceInfo? {
        try added("addVsock") { (vm: inout VMConfig) in vm.vsock = config }
    }

    public func addPmem(_ config: PmemConfig) throws(ControlError) -> PciDeviceInfo? {
        try added("addPmem") { (vm: inout VMConfig) in vm.pmem = (vm.pmem ?? []) + [config] }
    }

    public func addFs(_ config: FsConfig) throws(ControlError) -> PciDeviceInfo? {
        try added("addFs") { (vm: inout VMConfig) in vm.fs = (vm.fs ?? []) + [config] }
    }

    public func removeDevice(id: String) throws(ControlError) {
        try transition("removeDevice") { (snapshot: inout Snapshot) throws(ControlError) in
            guard var config = snapshot.config else {
                if permissive { return }
                throw .vmNotCreated
            }
            if let index = config.diskIDs.firstIndex(of: id) {
                config.disks?.remove(at: index)
            } else if let index = config.netIDs.firstIndex(of: id) {
                config.net?.remove(at: index)
            } else if let index = config.pmemIDs.firstIndex(of: id) {
                config.pmem?.remove(at: index)
            } else if let index = config.fsIDs.firstIndex(of: id) {
                config.fs?.remove(at: index)
            } else if config.vsockID == id {
                config.vsock = nil
            } else if !permissive {
                throw .invalidConfig("no device has id '\(id)'")
            }
            snapshot.config = config
        }
    }

    public func resizeDisk(_ request: VMResizeDisk) throws(ControlError) {
        try transition("resizeDisk") { (snapshot: inout Snapshot) throws(ControlError) in
            guard let config = snapshot.config, let state = snapshot.state else {
                if permissive { return }
                throw .vmNotCreated
            }
            if permissive { return }
            guard state == .running || state == .paused else {
                throw .failed(action: "vm.resize-disk", reason: "the VM is not booted: a disk is resized on a running or paused VM")
            }
            guard config.diskIDs.contains(request.id) else {
                throw .failed(action: "vm.resize-disk", reason: "Unknown device id: \(request.id)")
            }
        }
    }

    /// Adds a device to the configuration before boot; on a running VM answers a made-up
    /// address (the fake has no PCI bus), as hotplug would.
    private func added(_ call: String, _ change: (inout VMConfig) -> Void) throws(ControlError) -> PciDeviceInfo? {
        try transition(call) { (snapshot: inout Snapshot) throws(ControlError) -> PciDeviceInfo? in
            guard var config = snapshot.config, let state = snapshot.state else {
                if permissive { return nil }
                throw .vmNotCreated
            }
            change(&config)
            snapshot.config = config
            guard state == .running || state == .paused else { return nil }
            let count = (config.disks?.count ?? 0) + (config.net?.count ?? 0) + (config.pmem?.count ?? 0) + (config.fs?.count ?? 0) + (config.vsock == nil ? 0 : 1)
            let id = switch call {
            case "addDisk": "_disk\((config.disks?.count ?? 1) - 1)"
            case "addVsock": config.vsockID ?? "_vsock0"
            case "addPmem": config.pmemIDs.last ?? "_pmem0"
            case "addFs": config.fsIDs.last ?? "_fs0"
            default: "_net\((config.net?.count ?? 1) - 1)"
            }
            return PciDeviceInfo(id: id, bdf: "0000:00:\(String(format2: 3 + count)).0")
        }
    }

    private func note(_ call: String, _ descriptors: [OwnedFileDescriptor]) {
        let open = descriptors.map { fcntl($0.rawValue, F_GETFD) != -1 }
        memory.withLock { $0.descriptors.append((call, open)) }
    }

    private func record(_ call: String) {
        memory.withLock { $0.calls.append(call) }
    }

    private func move(_ call: String, action: String, from allowed: Set<VMState>, to next: VMState?) throws(ControlError) {
        try transition(call) { (snapshot: inout Snapshot) throws(ControlError) in
            if permissive {
                if let next, snapshot.state != nil { snapshot.state = next }
                return
            }
            guard let state = snapshot.state else { throw .vmNotCreated }
            guard allowed.contains(state) else { throw .invalidState(action: action, state: state) }
            if let next { snapshot.state = next }
        }
    }

    private func transition<T: Sendable>(_ call: String, _ body: (inout Snapshot) throws(ControlError) -> T) throws(ControlError) -> T {
        try memory.withLock { (snapshot: inout Snapshot) throws(ControlError) -> T in
            snapshot.calls.append(call)
            return try body(&snapshot)
        }
    }
}

extension String {
    /// Two lowercase hexadecimal digits.
    init(format2 value: Int) {
        let digits = String(value, radix: 16)
        self = digits.count < 2 ? "0" + digits : digits
    }
}
