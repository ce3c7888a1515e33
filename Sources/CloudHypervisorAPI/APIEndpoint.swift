// The endpoints Cloud Hypervisor serves under /api/v1 (vmm/src/api/http/mod.rs's routes),
// with the method and the body each takes.

/// One endpoint of the REST API.
public enum APIEndpoint: String, CaseIterable, Sendable {
    /// `GET /api/v1/vmm.ping`: the VMM's version and pid.
    case vmmPing = "vmm.ping"
    /// `PUT /api/v1/vmm.shutdown`: stop the VM if any and end the VMM process.
    case vmmShutdown = "vmm.shutdown"
    /// `PUT /api/v1/vm.create` with a `VmConfig` body.
    case vmCreate = "vm.create"
    /// `PUT /api/v1/vm.boot`.
    case vmBoot = "vm.boot"
    /// `PUT /api/v1/vm.delete`.
    case vmDelete = "vm.delete"
    /// `PUT /api/v1/vm.pause`.
    case vmPause = "vm.pause"
    /// `PUT /api/v1/vm.resume`.
    case vmResume = "vm.resume"
    /// `PUT /api/v1/vm.shutdown`.
    case vmShutdown = "vm.shutdown"
    /// `PUT /api/v1/vm.reboot`.
    case vmReboot = "vm.reboot"
    /// `PUT /api/v1/vm.power-button`.
    case vmPowerButton = "vm.power-button"
    /// `PUT /api/v1/vm.nmi` .
    case vmNmi = "vm.nmi"
    /// `GET /api/v1/vm.info`: `VmInfo`.
    case vmInfo = "vm.info"
    /// `GET /api/v1/vm.counters`: per-device counters.
    case vmCounters = "vm.counters"
    /// `PUT /api/v1/vm.add-disk` with a `DiskConfig` .
    case vmAddDisk = "vm.add-disk"
    /// `PUT /api/v1/vm.add-net` with a `NetConfig` .
    case vmAddNet = "vm.add-net"
    /// `PUT /api/v1/vm.add-device` with a `DeviceConfig` .
    case vmAddDevice = "vm.add-device"
    /// `PUT /api/v1/vm.add-fs` with an `FsConfig` .
    case vmAddFs = "vm.add-fs"
    /// `PUT /api/v1/vm.add-pmem` with a `PmemConfig` .
    case vmAddPmem = "vm.add-pmem"
    /// `PUT /api/v1/vm.add-vsock` with a `VsockConfig` .
    case vmAddVsock = "vm.add-vsock"
    /// `PUT /api/v1/vm.add-vdpa` with a `VdpaConfig` .
    case vmAddVdpa = "vm.add-vdpa"
    /// `PUT /api/v1/vm.add-user-device` with a `VmAddUserDevice` .
    case vmAddUserDevice = "vm.add-user-device"
    /// `PUT /api/v1/vm.add-generic-vhost-user` .
    case vmAddGenericVhostUser = "vm.add-generic-vhost-user"
    /// `PUT /api/v1/vm.remove-device` with a `VmRemoveDevice` .
    case vmRemoveDevice = "vm.remove-device"
    /// `PUT /api/v1/vm.resize` with a `VmResize` .
    case vmResize = "vm.resize"
    /// `PUT /api/v1/vm.resize-zone` with a `VmResizeZone` .
    case vmResizeZone = "vm.resize-zone"
    /// `PUT /api/v1/vm.resize-disk` .
    case vmResizeDisk = "vm.resize-disk"
    /// `PUT /api/v1/vm.snapshot` with a `VmSnapshotConfig` .
    case vmSnapshot = "vm.snapshot"
    /// `PUT /api/v1/vm.restore` with a `RestoreConfig` .
    case vmRestore = "vm.restore"
    /// `PUT /api/v1/vm.coredump` with a `VmCoredumpData` .
    case vmCoredump = "vm.coredump"
    /// `PUT /api/v1/vm.send-migration` with a `SendMigrationData` .
    case vmSendMigration = "vm.send-migration"
    /// `PUT /api/v1/vm.receive-migration` with a `ReceiveMigrationData` .
    case vmReceiveMigration = "vm.receive-migration"

    /// What an endpoint does with a request body.
    public enum Body: Equatable, Sendable {
        /// A `GET`: any body is ignored, as Cloud Hypervisor does.
        case ignored
        /// An action without a body: one is refused with 400.
        case none
        /// A `VmConfig` JSON object.
        case vmConfig
        /// A JSON object of the named schema, which the endpoint acts on.
        case object(schema: String)
        /// A JSON object of the named schema, which this VMM does not act on yet.
        case unsupported(schema: String)
    }

    /// The path prefix every endpoint lives under.
    public static let root = "/api/v1/"

    /// The full path (`/api/v1/vm.boot`).
    public var path: String { Self.root + rawValue }

    /// The one method the endpoint takes.
    public var method: HTTPMethod {
        switch self {
        case .vmmPing, .vmInfo, .vmCounters: .GET
        default: .PUT
        }
    }

    /// The body the endpoint takes.
    public var body: Body {
        switch self {
        case .vmmPing, .vmInfo, .vmCounters: .ignored
        case .vmmShutdown, .vmBoot, .vmDelete, .vmPause, .vmResume, .vmShutdown, .vmReboot, .vmPowerButton, .vmNmi: .none
        case .vmCreate: .vmConfig
        case .vmAddDisk: .object(schema: "DiskConfig")
        case .vmAddNet: .object(schema: "NetConfig")
        case .vmAddDevice: .object(schema: "DeviceConfig")
        case .vmAddFs: .object(schema: "FsConfig")
        case .vmAddPmem: .object(schema: "PmemConfig")
        case .vmAddVsock: .object(schema: "VsockConfig")
        case .vmAddVdpa: .object(schema: "VdpaConfig")
        case .vmAddUserDevice: .object(schema: "VmAddUserDevice")
        case .vmAddGenericVhostUser: .object(schema: "GenericVhostUserConfig")
        case .vmRemoveDevice: .object(schema: "VmRemoveDevice")
        case .vmResize: .object(schema: "VmResize")
        case .vmResizeZone: .unsupported(schema: "VmResizeZone")
        case .vmResizeDisk: .object(schema: "VmResizeDisk")
        case .vmSnapshot: .object(schema: "VmSnapshotConfig")
        case .vmRestore: .object(schema: "RestoreConfig")
        case .vmCoredump: .unsupported(schema: "VmCoredumpData")
        case .vmSendMigration: .object(schema: "SendMigrationData")
        case .vmReceiveMigration: .object(schema: "ReceiveMigrationData")
        }
    }

    /// The endpoint at `path` (a query string is ignored), if any.
    public init?(path: String) {
        var path = Substring(path)
        if let query = path.firstIndex(where: { $0 == "?" || $0 == "#" }) { path = path[..<query] }
        guard path.hasPrefix(Self.root) else { return nil }
        self.init(rawValue: String(path.dropFirst(Self.root.count)))
    }
}
