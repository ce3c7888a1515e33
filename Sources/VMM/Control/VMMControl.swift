import HostSystem

// The control plane's contract: what the REST API (and any embedder) can ask of the VMM,
// with Cloud Hypervisor's state names and JSON shapes (cloud-hypervisor.yaml).

/// A VM's lifecycle state, spelled as Cloud Hypervisor's `VmInfo.state`.
public enum VMState: String, Codable, Sendable, CaseIterable {
    /// Configured by `vm.create` (or the command line), not booted yet.
    case created = "Created"
    /// vCPUs running.
    case running = "Running"
    /// The guest powered off or `vm.shutdown` stopped it; `vm.boot` starts it again.
    case shutdown = "Shutdown"
    /// vCPUs and devices stopped by `vm.pause`.
    case paused = "Paused"
    /// Stopped at a debugger breakpoint (gdb stub; not reachable yet).
    case breakPoint = "BreakPoint"
}

/// One node of `VmInfo.device_tree`: a device, its parent and children, and its PCI address.
public struct DeviceNode: Codable, Equatable, Sendable {
    /// The device's id (`_disk0`, `_rng`, ...).
    public var id: String
    /// The id of the parent node, if any.
    public var parent: String?
    /// The ids of the child nodes.
    public var children: [String]
    /// The PCI bus/device/function as Cloud Hypervisor prints it (`0000:00:03.0`), if on PCI.
    public var pciBDF: String?

    /// Creates a node.
    public init(id: String, parent: String? = nil, children: [String] = [], pciBDF: String? = nil) {
        self.id = id
        self.parent = parent
        self.children = children
        self.pciBDF = pciBDF
    }

    enum CodingKeys: String, CodingKey {
        case id, parent, children, pciBDF = "pci_bdf"
    }
}

/// `GET /api/v1/vm.info`'s body (`VmInfo`).
public struct VMInfo: Codable, Equatable, Sendable {
    /// The VM's configuration.
    public var config: VMConfig
    /// The lifecycle state.
    public var state: VMState
    /// Guest RAM in bytes as the VM has it now.
    public var memoryActualSize: UInt64?
    /// The devices by id.
    public var deviceTree: [String: DeviceNode]?

    /// Creates the info.
    public init(config: VMConfig, state: VMState, memoryActualSize: UInt64? = nil, deviceTree: [String: DeviceNode]? = nil) {
        self.config = config
        self.state = state
        self.memoryActualSize = memoryActualSize
        self.deviceTree = deviceTree
    }

    enum CodingKeys: String, CodingKey {
        case config, state, memoryActualSize = "memory_actual_size", deviceTree = "device_tree"
    }
}

/// `GET /api/v1/vmm.ping`'s body (`VmmPingResponse`).
public struct VMMPingResponse: Codable, Equatable, Sendable {
    /// The build's version string.
    public var buildVersion: String
    /// The VMM's version.
    public var version: String
    /// The VMM's process id.
    public var pid: Int64
    /// Optional features compiled in.
    public var features: [String]

    /// Creates the response.
    public init(buildVersion: String, version: String, pid: Int64, features: [String]) {
        self.buildVersion = buildVersion
        self.version = version
        self.pid = pid
        self.features = features
    }

    enum CodingKeys: String, CodingKey {
        case buildVersion = "build_version", version, pid, features
    }
}

/// `PUT /api/v1/vm.resize`'s body (`VmResize`): the vCPU count, RAM and balloon size wanted.
public struct VMResize: Codable, Equatable, Sendable {
    /// vCPUs wanted (at least 1).
    public var desiredVCPUs: UInt32?
    /// RAM wanted, in bytes.
    public var desiredRAM: UInt64?
    /// Balloon size wanted, in bytes.
    public var desiredBalloon: UInt64?

    /// Creates a request.
    public init(desiredVCPUs: UInt32? = nil, desiredRAM: UInt64? = nil, desiredBalloon: UInt64? = nil) {
        self.desiredVCPUs = desiredVCPUs
        self.desiredRAM = desiredRAM
        self.desiredBalloon = desiredBalloon
    }

    enum CodingKeys: String, CodingKey {
        case desiredVCPUs = "desired_vcpus", desiredRAM = "desired_ram", desiredBalloon = "desired_balloon"
    }

    /// Decodes; sizes are int64 in Cloud Hypervisor's document, so larger ones are refused.
    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        desiredVCPUs = try c.decodeIfPresent(UInt32.self, forKey: .desiredVCPUs)
        desiredRAM = try c.decodeIfPresent(UInt64.self, forKey: .desiredRAM)
        desiredBalloon = try c.decodeIfPresent(UInt64.self, forKey: .desiredBalloon)
        for (key, value) in [(CodingKeys.desiredRAM, desiredRAM), (.desiredBalloon, desiredBalloon)] where (value ?? 0) > UInt64(Int64.max) {
            throw DecodingError.dataCorruptedError(forKey: key, in: c, debugDescription: "\(value!) is above the int64 range of the field")
        }
    }
}

/// `PUT /api/v1/vm.remove-device`'s body (`VmRemoveDevice`).
public struct VMRemoveDevice: Codable, Equatable, Sendable {
    /// The id of the device to remove.
    public var id: String?

    /// Creates a request.
    public init(id: String?) { self.id = id }
}

/// What `vm.add-*` answers for a device added to a running VM (`PciDeviceInfo`).
public struct PciDeviceInfo: Codable, Equatable, Sendable {
    /// The device's id.
    public var id: String
    /// Its PCI address (`0000:00:05.0`).
    public var bdf: String

    /// Creates the answer.
    public init(id: String, bdf: String) {
        self.id = id
        self.bdf = bdf
    }
}

/// Why the VMM refused or failed a control request. The REST API turns each case into a
/// status code and the sentence into the body.
public enum ControlError: Error, Equatable, Sendable, CustomStringConvertible {
    /// The request needs a VM and none was created.
    case vmNotCreated
    /// `vm.create` while a VM exists.
    case vmAlreadyCreated
    /// The action is not allowed in the VM's current state (`vm.pause` on a paused VM...).
    case invalidState(action: String, state: VMState)
    /// The configuration (or a device configuration) does not validate; the sentence says why.
    case invalidConfig(String)
    /// A configuration field asks for a feature this VMM does not have.
    case absentFeature(AbsentFeature)
    /// The action exists in Cloud Hypervisor but this VMM does not do it yet (hotplug...).
    case unsupported(action: String)
    /// The action was allowed but failed while running; the sentence says why.
    case failed(action: String, reason: String)

    /// A sentence that explains the refusal.
    public var description: String {
        switch self {
        case .vmNotCreated: "no VM is created: send vm.create first"
        case .vmAlreadyCreated: "a VM is already created: send vm.delete first"
        case let .invalidState(action, state): "\(action) is not allowed while the VM is \(state.rawValue)"
        case let .invalidConfig(message): "invalid configuration: \(message)"
        case let .absentFeature(feature): "\(feature)"
        case let .unsupported(action): "\(action) is not supported by this VMM yet"
        case let .failed(action, reason): "\(action) failed: \(reason)"
        }
    }
}

/// What the control plane can ask of the VMM. The VMM's own implementation is
/// `VMMController`; tests and embedders may provide others.
///
/// Calls may come from any thread; each returns when the action is done (a boot returns
/// once the vCPUs run, a shutdown once they stopped).
public protocol VMMControl: AnyObject, Sendable {
    /// `vmm.ping`.
    func ping() -> VMMPingResponse
    /// `vmm.shutdown`: stops the VM if one runs and makes the VMM process exit.
    func shutdownVMM() throws(ControlError)
    /// `vm.create`: validates and stores the configuration (state Created). `descriptors`
    /// were passed with the request (SCM_RIGHTS) and are named by the NICs' `fds`; the
    /// control owns them from now on.
    func create(_ config: VMConfig, descriptors: [OwnedFileDescriptor]) throws(ControlError)
    /// `vm.boot`: builds and starts the created VM (or boots a shut-down one again).
    func boot() throws(ControlError)
    /// `vm.delete`: stops the VM if it runs and forgets it.
    func delete() throws(ControlError)
    /// `vm.info`.
    func info() throws(ControlError) -> VMInfo
    /// `vm.counters`: per-device counters (`{"_disk0": {"read_bytes": 4096, ...}}`).
    func counters() throws(ControlError) -> [String: [String: UInt64]]
    /// `vm.pause`.
    func pause() throws(ControlError)
    /// `vm.resume`.
    func resume() throws(ControlError)
    /// `vm.shutdown`: stops the vCPUs and devices (state Shutdown).
    func shutdown() throws(ControlError)
    /// `vm.reboot`: resets the VM.
    func reboot() throws(ControlError)
    /// `vm.power-button`: presses the ACPI power button.
    func powerButton() throws(ControlError)
    /// `vm.resize`: changes the vCPU count, RAM or balloon.
    func resize(_ request: VMResize) throws(ControlError)
    /// `vm.add-disk`: before boot, adds the disk to the configuration (nil answer); on a running
    /// VM, hot-adds it and answers its PCI address.
    func addDisk(_ config: DiskConfig) throws(ControlError) -> PciDeviceInfo?
    /// `vm.add-net`: as `addDisk`. `descriptors` are TAP descriptors passed with the request
    /// (SCM_RIGHTS); the control owns them from now on, and closes them if it refuses.
    func addNet(_ config: NetConfig, descriptors: [OwnedFileDescriptor]) throws(ControlError) -> PciDeviceInfo?
    /// `vm.add-vsock`: before boot, puts the vsock device in the configuration (nil answer;
    /// refused when it has one, as Cloud Hypervisor allows one); on a running VM, hot-adds it.
    func addVsock(_ config: VsockConfig) throws(ControlError) -> PciDeviceInfo?
    /// `vm.add-pmem`: as `addDisk` (before boot into the configuration; on a running VM, hot-adds it).
    func addPmem(_ config: PmemConfig) throws(ControlError) -> PciDeviceInfo?
    /// `vm.add-fs`: as `addDisk` (before boot into the configuration; on a running VM, hot-adds it).
    func addFs(_ config: FsConfig) throws(ControlError) -> PciDeviceInfo?
    /// `vm.remove-device`: removes the device with this id.
    func removeDevice(id: String) throws(ControlError)
    /// `vm.resize-disk`: changes the size of a booted VM's disk.
    func resizeDisk(_ request: VMResizeDisk) throws(ControlError)
    /// `vm.snapshot`: writes a paused VM's snapshot into the directory `destinationURL` names
    /// (`file:///dir`).
    func snapshot(destinationURL: String) throws(ControlError)
    /// `vm.restore`: creates the VM from a snapshot, paused (running with `resume`).
    /// `descriptors` were passed with the request for the NICs `net_fds` names.
    func restore(_ config: RestoreConfig, descriptors: [OwnedFileDescriptor]) throws(ControlError)
    /// `vm.send-migration`: checks the request and starts migrating the VM to the destination;
    /// returns before the migration ends (its events tell how it went).
    func sendMigration(_ request: SendMigrationData) throws(ControlError)
    /// `vm.receive-migration`: listens, receives one VM and returns when it arrived.
    func receiveMigration(_ request: ReceiveMigrationData) throws(ControlError)
}

extension VMMControl {
    /// A control without vsock refuses `vm.add-vsock` as an absent feature.
    public func addVsock(_ config: VsockConfig) throws(ControlError) -> PciDeviceInfo? {
        throw .absentFeature(AbsentFeature(field: "vsock", option: "--vsock", feature: "virtio-vsock"))
    }

    /// A control without pmem refuses `vm.add-pmem` as an absent feature.
    public func addPmem(_ config: PmemConfig) throws(ControlError) -> PciDeviceInfo? {
        throw .absentFeature(AbsentFeature(field: "pmem", option: "--pmem", feature: "virtio-pmem"))
    }

    /// A control without virtio-fs refuses `vm.add-fs` as an absent feature.
    public func addFs(_ config: FsConfig) throws(ControlError) -> PciDeviceInfo? {
        throw .absentFeature(AbsentFeature(field: "fs", option: "--fs", feature: "virtio-fs"))
    }

    /// A control without snapshots refuses `vm.snapshot`.
    public func snapshot(destinationURL: String) throws(ControlError) { throw .unsupported(action: "vm.snapshot") }
    /// A control without snapshots refuses `vm.restore`.
    public func restore(_ config: RestoreConfig, descriptors: [OwnedFileDescriptor]) throws(ControlError) {
        throw .unsupported(action: "vm.restore")
    }

    /// A control without live migration refuses `vm.send-migration`.
    public func sendMigration(_ request: SendMigrationData) throws(ControlError) { throw .unsupported(action: "vm.send-migration") }
    /// A control without live migration refuses `vm.receive-migration`.
    public func receiveMigration(_ request: ReceiveMigrationData) throws(ControlError) { throw .unsupported(action: "vm.receive-migration") }

    /// `vm.create` with no passed descriptors.
    public func create(_ config: VMConfig) throws(ControlError) { try create(config, descriptors: []) }
}
