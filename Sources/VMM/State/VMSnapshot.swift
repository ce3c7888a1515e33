import Hypervisor
import GuestMemory

/// The top section of `state.json`: what the whole snapshot is, and the VM's in-kernel state.
struct VMSnapshotHeader: Codable, Equatable {
    /// The format this VMM writes and reads; another version is refused.
    static let formatVersion: UInt32 = 2
    /// Why each older format is not read: what it lacks.
    static let olderFormats: [UInt32: String] = [
        1: "its memory-manager section holds the memory ranges alone, without the boot RAM, the KVM slots and the memory hotplug slots (format 2)",
    ]

    /// The snapshot's format version.
    var version: UInt32
    /// The VMM that wrote it (`cloud-hypervisor v53.0.0-swift...`), for humans.
    var vmmVersion: String
    /// `SnapshotDirectory.digest` of `config.json`.
    var configDigest: String
    /// The size of `memory-ranges` in bytes.
    var memoryFileSize: UInt64
    /// The number of vCPUs saved.
    var vcpuCount: Int
    /// The in-kernel interrupt controllers, PIT and clock.
    var vm: InKernelVMState

    enum CodingKeys: String, CodingKey {
        case version, vmmVersion = "vmm_version", configDigest = "config_digest", memoryFileSize = "memory_file_size"
        case vcpuCount = "vcpu_count", vm
    }
}

/// The device manager's section: the devices in boot order with their kinds.
struct DeviceManagerSection: Codable, Equatable {
    /// One device.
    struct Entry: Codable, Equatable {
        var id: String
        var kind: String
        /// Where its BARs and pmem range were allocated (Cloud Hypervisor's device-tree
        /// resources); absent for a device without BARs.
        var placement: DevicePlacement?
    }
    var devices: [Entry]

    /// The placements by device id, for building the machine a restore or a migration fills.
    var placements: [String: DevicePlacement] {
        var result: [String: DevicePlacement] = [:]
        for entry in devices { if let placement = entry.placement { result[entry.id] = placement } }
        return result
    }

    /// The placements a state tree's device-manager section records (none when it has none).
    static func placements(in tree: SnapshotNode) throws(SnapshotError) -> [String: DevicePlacement] {
        try tree.child(SnapshotSection.deviceManager, path: "").decode(DeviceManagerSection.self, path: SnapshotSection.deviceManager).placements
    }
}

/// Names of the state tree's sections (Cloud Hypervisor's component ids).
enum SnapshotSection {
    static let cpuManager = "cpu-manager"
    static let memoryManager = "memory-manager"
    static let deviceManager = "device-manager"
}

/// A snapshot read back and checked, before anything is built from it.
struct LoadedSnapshot {
    let directory: SnapshotDirectory
    let config: VMConfig
    let header: VMSnapshotHeader
    let tree: SnapshotNode
}

/// Takes a paused VM's snapshot and reads one back (Cloud Hypervisor's `Vm::snapshot`,
/// `Vm::send` and the restore path): vCPUs, the VM's in-kernel devices, every device of the
/// device manager, and guest memory.
enum VMSnapshotter {
    /// Writes the snapshot of `built` (paused) into `directory`.
    static func save(_ built: BuiltVM, to directory: SnapshotDirectory, vmmVersion: String) throws(SnapshotError) {
        let configBytes: [UInt8]
        do { configBytes = try SnapshotJSON.data(built.config) } catch { throw .io("cannot encode the configuration: \(error)") }
        // Everything is gathered before any file is written, so a failure leaves no files.
        let captured = try capture(built)
        try directory.writeNew(SnapshotDirectory.configFile, configBytes)
        let memoryFile = try directory.create(SnapshotDirectory.memoryFile)
        let ranges = try MemorySnapshotIO.save(built.memory, to: memoryFile, path: directory.file(SnapshotDirectory.memoryFile))
        var memoryState = captured.memory
        memoryState.memoryRanges = ranges.table
        let tree = try captured.tree(memory: memoryState, memoryFileSize: ranges.fileSize, configDigest: SnapshotDirectory.digest(configBytes),
                                     vmmVersion: vmmVersion)
        do { try directory.commitState(try SnapshotJSON.data(tree)) } catch let error as SnapshotError { throw error } catch {
            throw .io("cannot encode the state: \(error)")
        }
    }

    /// The state of a paused VM apart from its memory: the VM's in-kernel devices, every vCPU
    /// and every device, in boot order.
    struct Captured {
        var vm: InKernelVMState
        var cpus: [String: SnapshotNode]
        var devices: [String: SnapshotNode]
        var entries: [DeviceManagerSection.Entry]
        /// The memory manager (its ranges are the guest memory's; a snapshot's are memory-ranges').
        var memory: MemoryManagerSnapshotData

        /// The state tree (`state.json`'s shape, and a migration's `State` payload).
        func tree(memory: MemoryManagerSnapshotData, memoryFileSize: UInt64, configDigest: String, vmmVersion: String) throws(SnapshotError) -> SnapshotNode {
            let header = VMSnapshotHeader(version: VMSnapshotHeader.formatVersion, vmmVersion: vmmVersion, configDigest: configDigest,
                                          memoryFileSize: memoryFileSize, vcpuCount: cpus.count, vm: vm)
            do {
                return SnapshotNode(snapshots: [
                    SnapshotSection.cpuManager: SnapshotNode(snapshots: cpus),
                    SnapshotSection.memoryManager: try .leaf(memory),
                    SnapshotSection.deviceManager: SnapshotNode(snapshots: devices, state: try SnapshotJSON.text(DeviceManagerSection(devices: entries))),
                ], state: try SnapshotJSON.text(header))
            } catch {
                throw .io("cannot encode the state: \(error)")
            }
        }
    }

    /// Reads the state of `built` (paused) apart from its memory.
    static func capture(_ built: BuiltVM) throws(SnapshotError) -> Captured {
        let vmState: InKernelVMState
        var cpus: [String: SnapshotNode] = [:]
        do {
            vmState = try built.vm.state()
            for (index, vcpu) in built.vcpus.enumerated() { cpus[String(index)] = try .leaf(try vcpu.state()) }
        } catch {
            throw .io("cannot read the vCPUs' and the VM's state: \(error)")
        }
        var devices: [String: SnapshotNode] = [:]
        var entries: [DeviceManagerSection.Entry] = []
        for device in built.deviceManager.devices {
            entries.append(.init(id: device.id, kind: device.kind, placement: device.resources.placement))
            guard let save = device.saveState else { continue }
            do { devices[device.id] = SnapshotNode(state: try save()) } catch { throw .io("cannot save \(device.id)'s state: \(error)") }
        }
        return Captured(vm: vmState, cpus: cpus, devices: devices, entries: entries, memory: try MemoryManagerSnapshotData.capture(built))
    }

    /// Reads `config.json` and `state.json` and checks that the format version is this VMM's,
    /// that both decode, that they agree on the vCPUs and that `memory-ranges` is complete.
    static func load(from directory: SnapshotDirectory) throws(SnapshotError) -> LoadedSnapshot {
        let stateBytes = try directory.read(SnapshotDirectory.stateFile)
        let configBytes = try directory.read(SnapshotDirectory.configFile)
        let tree: SnapshotNode
        do { tree = try SnapshotJSON.value(SnapshotNode.self, from: stateBytes) } catch {
            throw .damaged("\(directory.file(SnapshotDirectory.stateFile)) is not a state tree: \(error)")
        }
        let header = try tree.decode(VMSnapshotHeader.self, path: "")
        guard header.version == VMSnapshotHeader.formatVersion else {
            throw .version(found: header.version, expected: VMSnapshotHeader.formatVersion)
        }
        // config.json may differ from the one state.json was written with (its digest is
        // recorded): Cloud Hypervisor lets users edit it, a clone's disk path for one. What must
        // agree is checked instead: the vCPU count here, the memory ranges and the device list
        // (ids and kinds) when the restore builds the machine.
        let config: VMConfig
        do { config = try SnapshotJSON.value(VMConfig.self, from: configBytes) } catch {
            throw .damaged("config.json does not decode: \(error)")
        }
        do { try config.validate() } catch { throw .damaged("config.json is not a valid configuration: \(error)") }
        guard header.vcpuCount == Int(config.cpus.bootVCPUs) else {
            throw .damaged("state.json holds \(header.vcpuCount) vCPUs but config.json boots \(config.cpus.bootVCPUs)")
        }
        let memory = try directory.open(SnapshotDirectory.memoryFile)
        let size: Int64
        do { size = try memory.size() } catch { throw .io("cannot read the size of memory-ranges: \(error)") }
        guard UInt64(size) == header.memoryFileSize else {
            throw .damaged("memory-ranges is \(size) bytes, state.json says \(header.memoryFileSize)")
        }
        return LoadedSnapshot(directory: directory, config: config, header: header, tree: tree)
    }

    /// Puts the snapshot's state into `built`, a VM just built from the snapshot's
    /// configuration with `restoring: true` and not started: guest memory, the VM's in-kernel
    /// devices, the vCPUs, then every device in boot order.
    static func restore(_ snapshot: LoadedSnapshot, into built: BuiltVM, onDemand: Bool, prefault: Bool) throws(SnapshotError) -> MemorySnapshotIO.Restoration {
        let table = try memoryState(snapshot.tree).memoryRanges
        let plan = try RestorePlan(tree: snapshot.tree, header: snapshot.header, built: built)
        let file = try snapshot.directory.open(SnapshotDirectory.memoryFile)
        let restoration = try MemorySnapshotIO.restore(built.memory, table: table, from: file, onDemand: onDemand, prefault: prefault)
        try plan.apply(to: built)
        return restoration
    }

    /// The memory manager's section of `tree`.
    static func memoryState(_ tree: SnapshotNode) throws(SnapshotError) -> MemoryManagerSnapshotData {
        try tree.child(SnapshotSection.memoryManager, path: "").decode(MemoryManagerSnapshotData.self, path: SnapshotSection.memoryManager)
    }

    /// The non-memory part of a state tree, decoded and checked against the machine it goes
    /// into before anything of that machine changes.
    struct RestorePlan {
        let header: VMSnapshotHeader
        let vcpuStates: [VCPUState]
        let deviceSection: SnapshotNode

        /// Decodes every vCPU's state and checks that the tree lists the devices `built` has.
        init(tree: SnapshotNode, header: VMSnapshotHeader, built: BuiltVM) throws(SnapshotError) {
            self.header = header
            let cpus = try tree.child(SnapshotSection.cpuManager, path: "")
            deviceSection = try tree.child(SnapshotSection.deviceManager, path: "")
            let listed = try deviceSection.decode(DeviceManagerSection.self, path: SnapshotSection.deviceManager)
            let present = built.deviceManager.devices
            // Compared by id: a device hot-added to the snapshotted VM comes last in its registry
            // but with its kind in the configuration's build order.
            let expected = present.map { [$0.id, $0.kind] }.sorted { $0[0] < $1[0] }
            guard listed.devices.map({ [$0.id, $0.kind] }).sorted(by: { $0[0] < $1[0] }) == expected else {
                throw .damaged("the snapshot's devices (\(listed.devices.map { "\($0.id):\($0.kind)" }.joined(separator: ", "))) are not the ones its configuration builds (\(present.map { "\($0.id):\($0.kind)" }.joined(separator: ", ")))")
            }
            guard header.vcpuCount == built.vcpus.count else {
                throw .damaged("the state holds \(header.vcpuCount) vCPUs but the configuration builds \(built.vcpus.count)")
            }
            var states: [VCPUState] = []
            for index in built.vcpus.indices {
                states.append(try cpus.child(String(index), path: SnapshotSection.cpuManager)
                    .decode(VCPUState.self, path: "\(SnapshotSection.cpuManager)/\(index)"))
            }
            vcpuStates = states
        }

        /// The VM's in-kernel devices, the vCPUs, then every device in boot order (a device
        /// that `restoresFirst`, a virtual IOMMU, before the others).
        func apply(to built: BuiltVM) throws(SnapshotError) {
            do {
                try built.vm.restore(header.vm)
                for (vcpu, state) in zip(built.vcpus, vcpuStates) { try vcpu.restore(state) }
            } catch {
                throw .damaged("the vCPUs' or the VM's state was refused: \(error)")
            }
            let devices = built.deviceManager.devices
            for device in devices.filter(\.restoresFirst) + devices.filter({ !$0.restoresFirst }) {
                guard let restore = device.restoreState else { continue }
                let node = try deviceSection.child(device.id, path: SnapshotSection.deviceManager)
                guard let text = node.snapshotData?.state else { throw .damaged("state.json has no data for device \(device.id)") }
                do { try restore(text) } catch { throw .damaged("device \(device.id): \(error)") }
            }
        }
    }
}

/// Reads and checks a snapshot directory without building anything, as `--restore` does
/// first: the files exist, `state.json` is a state tree of this format version written with
/// this `config.json`, every section decodes, `memory-ranges` has the size the table says.
public enum SnapshotCheck {
    /// The snapshot's configuration, or the reason the snapshot is refused.
    public static func check(url: String) throws(SnapshotError) -> VMConfig {
        let snapshot = try VMSnapshotter.load(from: try SnapshotDirectory(url: url))
        let cpus = try snapshot.tree.child(SnapshotSection.cpuManager, path: "")
        for index in 0..<snapshot.header.vcpuCount {
            _ = try cpus.child(String(index), path: SnapshotSection.cpuManager)
                .decode(VCPUState.self, path: "\(SnapshotSection.cpuManager)/\(index)")
        }
        let memory = try VMSnapshotter.memoryState(snapshot.tree)
        _ = try memory.hotAddedMappings()
        let table = memory.memoryRanges
        guard table.totalLength == snapshot.header.memoryFileSize else {
            throw .damaged("the memory table covers \(table.totalLength.map(String.init) ?? "more than 2^64") bytes, memory-ranges has \(snapshot.header.memoryFileSize)")
        }
        _ = try snapshot.tree.child(SnapshotSection.deviceManager, path: "")
            .decode(DeviceManagerSection.self, path: SnapshotSection.deviceManager)
        return snapshot.config
    }

    /// The digest `state.json` records of `config.json`'s bytes.
    public static func configDigest(_ bytes: [UInt8]) -> String { SnapshotDirectory.digest(bytes) }
}
