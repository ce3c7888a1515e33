// ch-remote's subcommands, as Cloud Hypervisor v53.0's ch-remote (src/bin/ch-remote.rs) names
// them and builds their requests. The add-* subcommands parse Cloud Hypervisor's option syntax
// with the same parsers as the cloud-hypervisor command (the VMM module's `…Config.parse`).
import ArgumentParser
import VMM

#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

// MARK: Requests without a body

/// A subcommand that sends one request without a body.
protocol BodilessCommand: RemoteCommand {
    static var method: String { get }
    static var endpoint: String { get }
}

extension BodilessCommand {
    static var method: String { "PUT" }
    func request() throws(RemoteFailure) -> RemoteRequest { RemoteRequest(method: Self.method, endpoint: Self.endpoint) }
}

struct Boot: BodilessCommand {
    static let configuration = CommandConfiguration(abstract: "Boot a created VM.")
    static let endpoint = "vm.boot"
    @ParentCommand var remote: CHRemote
}

struct Counters: BodilessCommand {
    static let configuration = CommandConfiguration(abstract: "Counters from the VM.")
    static let method = "GET"
    static let endpoint = "vm.counters"
    @ParentCommand var remote: CHRemote
}

struct Delete: BodilessCommand {
    static let configuration = CommandConfiguration(abstract: "Delete a VM.")
    static let endpoint = "vm.delete"
    @ParentCommand var remote: CHRemote
}

struct Info: BodilessCommand {
    static let configuration = CommandConfiguration(abstract: "Info on the VM.")
    static let method = "GET"
    static let endpoint = "vm.info"
    @ParentCommand var remote: CHRemote
}

struct Nmi: BodilessCommand {
    static let configuration = CommandConfiguration(abstract: "Trigger NMI.")
    static let endpoint = "vm.nmi"
    @ParentCommand var remote: CHRemote
}

struct Pause: BodilessCommand {
    static let configuration = CommandConfiguration(abstract: "Pause the VM.")
    static let endpoint = "vm.pause"
    @ParentCommand var remote: CHRemote
}

struct Ping: BodilessCommand {
    static let configuration = CommandConfiguration(abstract: "Ping the VMM to check for API server availability.")
    static let method = "GET"
    static let endpoint = "vmm.ping"
    @ParentCommand var remote: CHRemote
}

struct PowerButton: BodilessCommand {
    static let configuration = CommandConfiguration(commandName: "power-button", abstract: "Trigger a power button in the VM.")
    static let endpoint = "vm.power-button"
    @ParentCommand var remote: CHRemote
}

struct Reboot: BodilessCommand {
    static let configuration = CommandConfiguration(abstract: "Reboot the VM.")
    static let endpoint = "vm.reboot"
    @ParentCommand var remote: CHRemote
}

struct Resume: BodilessCommand {
    static let configuration = CommandConfiguration(abstract: "Resume the VM.")
    static let endpoint = "vm.resume"
    @ParentCommand var remote: CHRemote
}

struct Shutdown: BodilessCommand {
    static let configuration = CommandConfiguration(abstract: "Shutdown the VM.")
    static let endpoint = "vm.shutdown"
    @ParentCommand var remote: CHRemote
}

struct ShutdownVMM: BodilessCommand {
    static let configuration = CommandConfiguration(commandName: "shutdown-vmm", abstract: "Shutdown the VMM.")
    static let endpoint = "vmm.shutdown"
    @ParentCommand var remote: CHRemote
}

// MARK: create

struct Create: RemoteCommand {
    static let configuration = CommandConfiguration(abstract: "Create VM from a JSON configuration.")
    @ParentCommand var remote: CHRemote
    @Argument(help: "Path to a VmConfig JSON file, or '-' for standard input (the default).")
    var path = "-"

    func request() throws(RemoteFailure) -> RemoteRequest {
        RemoteRequest(method: "PUT", endpoint: "vm.create", body: try readAll(path: path))
    }
}

// MARK: add-*

/// An `add-*` subcommand: one device in Cloud Hypervisor's option syntax, parsed by the VMM's
/// parser and sent as that configuration's JSON.
protocol AddCommand: RemoteCommand {
    associatedtype Config: Encodable
    /// The subcommand's name (`add-disk`); the endpoint is `vm.` and this name.
    static var name: String { get }
    /// What the syntax describes, for errors (`disk` → "Error parsing disk syntax").
    static var kind: String { get }
    /// The VMM's parser for this kind of device.
    static func parse(_ text: String) throws(ConfigError) -> Config
    /// Takes the descriptors out of `config` (they go as SCM_RIGHTS, never in the body),
    /// with the key that named them.
    static func takeDescriptors(_ config: inout Config) -> (key: String, descriptors: [Int32])
    /// The option text.
    var config: String { get }
}

extension AddCommand {
    static func takeDescriptors(_ config: inout Config) -> (key: String, descriptors: [Int32]) { ("fd", []) }

    func request() throws(RemoteFailure) -> RemoteRequest {
        var parsed: Config
        do {
            parsed = try Self.parse(config)
        } catch {
            throw RemoteFailure(["\(Self.name): Error parsing \(Self.kind) syntax", error.message])
        }
        let (key, descriptors) = Self.takeDescriptors(&parsed)
        try requireOpen(descriptors, command: Self.name, key: key)
        let body: Data
        do {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
            body = try encoder.encode(parsed)
        } catch {
            throw RemoteFailure(["\(Self.name): cannot encode the \(Self.kind) configuration as JSON", "\(error)"])
        }
        return RemoteRequest(method: "PUT", endpoint: "vm.\(Self.name)", body: Array(body), descriptors: descriptors)
    }
}

struct AddDevice: AddCommand {
    static let name = "add-device", kind = "device"
    static let configuration = CommandConfiguration(commandName: name, abstract: "Add VFIO device.")
    @ParentCommand var remote: CHRemote
    @Argument(help: ArgumentHelp(DeviceConfig.syntax, valueName: "device_config")) var config: String
    static func parse(_ text: String) throws(ConfigError) -> DeviceConfig { try DeviceConfig.parse(text) }
    static func takeDescriptors(_ config: inout DeviceConfig) -> (key: String, descriptors: [Int32]) {
        defer { config.fd = nil }
        return ("fd", config.fd.map { [$0] } ?? [])
    }
}

struct AddDisk: AddCommand {
    static let name = "add-disk", kind = "disk"
    static let configuration = CommandConfiguration(commandName: name, abstract: "Add block device.")
    @ParentCommand var remote: CHRemote
    @Argument(help: ArgumentHelp(DiskConfig.syntax, valueName: "disk_config")) var config: String
    static func parse(_ text: String) throws(ConfigError) -> DiskConfig { try DiskConfig.parse(text) }
}

struct AddFs: AddCommand {
    static let name = "add-fs", kind = "filesystem"
    static let configuration = CommandConfiguration(commandName: name, abstract: "Add virtio-fs backed fs device.")
    @ParentCommand var remote: CHRemote
    @Argument(help: ArgumentHelp(FsConfig.syntax, valueName: "fs_config")) var config: String
    static func parse(_ text: String) throws(ConfigError) -> FsConfig { try FsConfig.parse(text) }
}

struct AddGenericVhostUser: AddCommand {
    static let name = "add-generic-vhost-user", kind = "generic vhost-user"
    static let configuration = CommandConfiguration(commandName: name, abstract: "Add generic vhost-user device.")
    @ParentCommand var remote: CHRemote
    @Argument(help: ArgumentHelp(GenericVhostUserConfig.syntax, valueName: "generic_vhost_user_config")) var config: String
    static func parse(_ text: String) throws(ConfigError) -> GenericVhostUserConfig { try GenericVhostUserConfig.parse(text) }
}

struct AddNet: AddCommand {
    static let name = "add-net", kind = "network"
    static let configuration = CommandConfiguration(commandName: name, abstract: "Add network device.")
    @ParentCommand var remote: CHRemote
    @Argument(help: ArgumentHelp(NetConfig.syntax, valueName: "net_config")) var config: String
    static func parse(_ text: String) throws(ConfigError) -> NetConfig { try NetConfig.parse(text) }
    static func takeDescriptors(_ config: inout NetConfig) -> (key: String, descriptors: [Int32]) {
        defer { config.fds = nil }
        return ("fd", config.fds ?? [])
    }
}

struct AddPmem: AddCommand {
    static let name = "add-pmem", kind = "persistent memory"
    static let configuration = CommandConfiguration(commandName: name, abstract: "Add persistent memory device.")
    @ParentCommand var remote: CHRemote
    @Argument(help: ArgumentHelp(PmemConfig.syntax, valueName: "pmem_config")) var config: String
    static func parse(_ text: String) throws(ConfigError) -> PmemConfig { try PmemConfig.parse(text) }
}

struct AddUserDevice: AddCommand {
    static let name = "add-user-device", kind = "user device"
    static let configuration = CommandConfiguration(commandName: name, abstract: "Add userspace device.")
    @ParentCommand var remote: CHRemote
    @Argument(help: ArgumentHelp(UserDeviceConfig.syntax, valueName: "device_config")) var config: String
    static func parse(_ text: String) throws(ConfigError) -> UserDeviceConfig { try UserDeviceConfig.parse(text) }
}

struct AddVdpa: AddCommand {
    static let name = "add-vdpa", kind = "vDPA device"
    static let configuration = CommandConfiguration(commandName: name, abstract: "Add vDPA device.")
    @ParentCommand var remote: CHRemote
    @Argument(help: ArgumentHelp(VdpaConfig.syntax, valueName: "vdpa_config")) var config: String
    static func parse(_ text: String) throws(ConfigError) -> VdpaConfig { try VdpaConfig.parse(text) }
}

struct AddVsock: AddCommand {
    static let name = "add-vsock", kind = "vsock"
    static let configuration = CommandConfiguration(commandName: name, abstract: "Add vsock device.")
    @ParentCommand var remote: CHRemote
    @Argument(help: ArgumentHelp(VsockConfig.syntax, valueName: "vsock_config")) var config: String
    static func parse(_ text: String) throws(ConfigError) -> VsockConfig { try VsockConfig.parse(text) }
}

// MARK: Actions with a body

/// Builds a body, naming the subcommand when the syntax is refused.
func body(_ command: String, _ make: () throws(SyntaxProblem) -> JSONText) throws(RemoteFailure) -> [UInt8] {
    do {
        return try make().bytes
    } catch {
        throw RemoteFailure(command, error)
    }
}

struct Coredump: RemoteCommand {
    static let configuration = CommandConfiguration(abstract: "Create a coredump from VM.")
    @ParentCommand var remote: CHRemote
    @Argument(help: ArgumentHelp("<file_path>", valueName: "coredump_config")) var destination: String
    func request() throws(RemoteFailure) -> RemoteRequest {
        RemoteRequest(method: "PUT", endpoint: "vm.coredump", body: ActionBodies.destination(destination).bytes)
    }
}

struct ReceiveMigration: RemoteCommand {
    static let configuration = CommandConfiguration(commandName: "receive-migration", abstract: "Receive a VM migration.")
    @ParentCommand var remote: CHRemote
    @Argument(help: ArgumentHelp(ActionBodies.receiveMigrationSyntax, valueName: "receive_migration_config")) var config: String
    func request() throws(RemoteFailure) -> RemoteRequest {
        RemoteRequest(method: "PUT", endpoint: "vm.receive-migration",
                      body: try body("receive-migration") { () throws(SyntaxProblem) in try ActionBodies.receiveMigration(config) })
    }
}

struct RemoveDevice: RemoteCommand {
    static let configuration = CommandConfiguration(commandName: "remove-device", abstract: "Remove VFIO and PCI device.")
    @ParentCommand var remote: CHRemote
    @Argument(help: ArgumentHelp("<device_id>", valueName: "id")) var id: String
    func request() throws(RemoteFailure) -> RemoteRequest {
        RemoteRequest(method: "PUT", endpoint: "vm.remove-device", body: ActionBodies.removeDevice(id: id).bytes)
    }
}

struct Resize: RemoteCommand {
    static let configuration = CommandConfiguration(abstract: "Resize the VM.")
    @ParentCommand var remote: CHRemote
    @Option(help: "New balloon size in bytes (supports K/M/G suffix)") var balloon: String?
    @Option(help: "New vCPUs count") var cpus: String?
    @Option(help: "New memory size in bytes (supports K/M/G suffix)") var memory: String?
    func request() throws(RemoteFailure) -> RemoteRequest {
        RemoteRequest(method: "PUT", endpoint: "vm.resize", body: try body("resize") { () throws(SyntaxProblem) in
            try ActionBodies.resize(cpus: cpus, memory: memory, balloon: balloon)
        })
    }
}

struct ResizeDisk: RemoteCommand {
    static let configuration = CommandConfiguration(commandName: "resize-disk", abstract: "Resize an attached disk.")
    @ParentCommand var remote: CHRemote
    @Option(help: "Disk identifier") var disk: String
    @Option(help: "New disk size") var size: String
    func request() throws(RemoteFailure) -> RemoteRequest {
        RemoteRequest(method: "PUT", endpoint: "vm.resize-disk", body: try body("resize-disk") { () throws(SyntaxProblem) in
            try ActionBodies.resizeDisk(id: disk, size: size)
        })
    }
}

struct ResizeZone: RemoteCommand {
    static let configuration = CommandConfiguration(commandName: "resize-zone", abstract: "Resize a memory zone.")
    @ParentCommand var remote: CHRemote
    @Option(help: "Memory zone identifier") var id: String
    @Option(help: "New memory zone size in bytes (supports K/M/G suffix)") var size: String
    func request() throws(RemoteFailure) -> RemoteRequest {
        RemoteRequest(method: "PUT", endpoint: "vm.resize-zone", body: try body("resize-zone") { () throws(SyntaxProblem) in
            try ActionBodies.resizeZone(id: id, size: size)
        })
    }
}

struct Restore: RemoteCommand {
    static let configuration = CommandConfiguration(abstract: "Restore VM from a snapshot.")
    @ParentCommand var remote: CHRemote
    @Argument(help: ArgumentHelp(ActionBodies.restoreSyntax, valueName: "restore_config")) var config: String
    func request() throws(RemoteFailure) -> RemoteRequest {
        let restore: ActionBody
        do {
            restore = try ActionBodies.restore(config)
        } catch {
            throw RemoteFailure("restore", error)
        }
        try requireOpen(restore.descriptors, command: "restore", key: "net_fds")
        return RemoteRequest(method: "PUT", endpoint: "vm.restore", body: restore.json.bytes, descriptors: restore.descriptors)
    }
}

struct SendMigration: RemoteCommand {
    static let configuration = CommandConfiguration(commandName: "send-migration", abstract: "Initiate a VM migration.")
    @ParentCommand var remote: CHRemote
    @Argument(help: ArgumentHelp(ActionBodies.sendMigrationSyntax, valueName: "send_migration_config")) var config: String
    func request() throws(RemoteFailure) -> RemoteRequest {
        RemoteRequest(method: "PUT", endpoint: "vm.send-migration",
                      body: try body("send-migration") { () throws(SyntaxProblem) in try ActionBodies.sendMigration(config) })
    }
}

struct Snapshot: RemoteCommand {
    static let configuration = CommandConfiguration(abstract: "Create a snapshot from VM.")
    @ParentCommand var remote: CHRemote
    @Argument(help: ArgumentHelp("<destination_url>", valueName: "snapshot_config")) var destination: String
    func request() throws(RemoteFailure) -> RemoteRequest {
        RemoteRequest(method: "PUT", endpoint: "vm.snapshot", body: ActionBodies.destination(destination).bytes)
    }
}
