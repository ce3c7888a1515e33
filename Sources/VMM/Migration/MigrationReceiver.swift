// The destination side of a live migration: Cloud Hypervisor's receive state machine, one
// request at a time, each answered OK or Error; an error ends the migration and leaves nothing.
import GuestMemory
import HostSystem
import Hypervisor

/// How the receiver makes the machine, in Cloud Hypervisor's two steps: guest memory when the
/// `Config` arrives (new, or the memory descriptors of local=on mapped; the VMM also makes the
/// KVM VM and its vCPUs then, while the source still runs), the devices around it when the
/// `State` arrives, after the source let go of its disks' locks (not started, `restoring: true`).
struct MigrationMachineFactory {
    var memory: (VMConfig, MemoryManagerSnapshotData, [UInt32: OwnedFileDescriptor]) throws -> GuestMemory
    /// Builds the devices around the memory, each where the state's placements say (by device id).
    var machine: (VMConfig, GuestMemory, [String: DevicePlacement]) throws -> BuiltVM
}

/// Receives one VM.
final class MigrationReceiver {
    /// Where the protocol stands (Cloud Hypervisor's `ReceiveMigrationState`).
    enum Phase: String, Equatable {
        case established = "Established", started = "Started", memoryFDsReceived = "MemoryFdsReceived"
        case configured = "Configured", stateReceived = "StateReceived", completed = "Completed"
    }

    /// What a finished migration leaves: the machine, restored and not started, and whether
    /// the source ran it (`Complete`) or had it paused (`CompletePaused`).
    struct Received {
        let built: BuiltVM
        let resume: Bool
        /// Milliseconds the State step took to build the machine and to restore its state.
        let buildMilliseconds: Double, restoreMilliseconds: Double
    }

    /// The largest `Config` payload accepted.
    static let maxConfigBytes: UInt64 = 16 << 20
    /// The largest `State` payload accepted.
    static let maxStateBytes: UInt64 = 256 << 20
    /// The most memory descriptors accepted (one per region).
    static let maxMemoryFiles = 64

    private let factory: MigrationMachineFactory
    private let checksCPUID: Bool
    private(set) var phase = Phase.established
    private var files: [UInt32: OwnedFileDescriptor] = [:]
    private var config: VMConfig?
    private var memory: GuestMemory?
    private var built: BuiltVM?
    private var resume = false

    /// A receiver that builds with `factory` and, with `checksCPUID`, refuses a guest whose CPU
    /// features this host does not give the vCPUs it builds.
    init(checksCPUID: Bool = true, factory: MigrationMachineFactory) {
        self.factory = factory
        self.checksCPUID = checksCPUID
    }

    /// Runs the protocol on `channel` until `Complete`/`CompletePaused` (returns the machine)
    /// or a failure (answers Error when it can, and throws the reason).
    func run(_ channel: MigrationChannel) throws(MigrationError) -> Received {
        while true {
            let request = try channel.receiveRequest()
            do {
                try step(request, channel)
            } catch {
                try? channel.send(MigrationResponse(.error))
                throw error
            }
            try channel.send(MigrationResponse(.ok))
            if phase == .completed, let built {
                return Received(built: built, resume: resume, buildMilliseconds: buildMilliseconds, restoreMilliseconds: restoreMilliseconds)
            }
        }
    }

    /// Handles one request, reading its payload; does not answer.
    func step(_ request: MigrationRequest, _ channel: MigrationChannel) throws(MigrationError) {
        let command = request.command
        if command == .abandon { throw MigrationError("the sender abandoned the migration") }
        switch (phase, command) {
        case (.established, .start):
            guard request.length == 0 else { throw MigrationError("Start carries no payload, this one announces \(request.length) bytes") }
            _ = try request.senderVersion()
            phase = .started
        case (.started, .memoryFD), (.memoryFDsReceived, .memoryFD):
            guard request.length == 4 else { throw MigrationError("MemoryFd carries a 4-byte slot number, this one announces \(request.length) bytes") }
            let (bytes, file) = try channel.receiveWithDescriptor(4)
            let slot = ByteReader.u32(bytes, at: 0)
            guard files[slot] == nil, files.count < Self.maxMemoryFiles else {
                throw MigrationError("memory slot \(slot) arrived twice or too many memory descriptors (at most \(Self.maxMemoryFiles))")
            }
            files[slot] = file
            phase = .memoryFDsReceived
        case (.started, .config), (.memoryFDsReceived, .config):
            try configure(try payload(request, channel, limit: Self.maxConfigBytes, what: "Config"))
            phase = .configured
        case (.configured, .memory):
            guard let memory else { throw MigrationError("Memory before the guest memory exists") }
            try MigrationMemory.receive(tableLength: request.length, into: memory, over: channel)
        case (.configured, .state):
            try restore(try payload(request, channel, limit: Self.maxStateBytes, what: "State"))
            phase = .stateReceived
        case (.stateReceived, .complete), (.stateReceived, .completePaused):
            resume = command == .complete
            phase = .completed
        default:
            throw MigrationError("Can't handle command \(command.name) in current receive state \(phase.rawValue)")
        }
    }

    private func payload(_ request: MigrationRequest, _ channel: MigrationChannel, limit: UInt64, what: String) throws(MigrationError) -> [UInt8] {
        guard request.length > 0, request.length <= limit else {
            throw MigrationError("a \(what) payload of \(request.length) bytes is refused (1 to \(limit) bytes)")
        }
        return try channel.read(Int(request.length))
    }

    private func configure(_ bytes: [UInt8]) throws(MigrationError) {
        let payload: MigrationConfigPayload
        do { payload = try SnapshotJSON.value(MigrationConfigPayload.self, from: bytes) } catch {
            throw MigrationError("the configuration does not decode: \(error)")
        }
        let config = payload.vmConfig
        do { try config.validate() } catch { throw MigrationError("the configuration is not valid: \(error)") }
        if let absent = config.absentFeatures.first { throw MigrationError("the configuration asks for \(absent)") }
        if !files.isEmpty, !config.memory.shared {
            throw MigrationError("memory descriptors came but the configuration's memory is not shared")
        }
        let made: GuestMemory
        do { made = try factory.memory(config, payload.memoryManagerData, files) } catch { throw MigrationError("cannot make the guest memory: \(error)") }
        guard made.rangeTable == payload.memoryManagerData.memoryRanges else {
            throw MigrationError("the sender's memory ranges \(payload.memoryManagerData.memoryRanges.ranges) are not the ones the configuration builds here \(made.rangeTable.ranges)")
        }
        self.config = config
        commonCPUID = payload.commonCPUID
        memory = made
    }

    private var commonCPUID: [CPUIDEntry] = []
    private var buildMilliseconds = 0.0, restoreMilliseconds = 0.0

    private func restore(_ bytes: [UInt8]) throws(MigrationError) {
        guard let config, let memory else { throw MigrationError("State before the configuration") }
        let tree: SnapshotNode
        let header: VMSnapshotHeader
        let placements: [String: DevicePlacement]
        do {
            tree = try SnapshotJSON.value(SnapshotNode.self, from: bytes)
            header = try tree.decode(VMSnapshotHeader.self, path: "")
            guard header.version == VMSnapshotHeader.formatVersion else {
                throw SnapshotError.version(found: header.version, expected: VMSnapshotHeader.formatVersion)
            }
            placements = try DeviceManagerSection.placements(in: tree)
        } catch let error as SnapshotError {
            throw MigrationError("the VM's state was refused: \(error)")
        } catch {
            throw MigrationError("the VM's state does not decode: \(error)")
        }
        // The devices now (where the source had them): the source released its disks' locks
        // before sending the state.
        let buildBegin = ContinuousClock.now
        let built: BuiltVM
        do { built = try factory.machine(config, memory, placements) } catch { throw MigrationError("cannot build the VM: \(error)") }
        self.built = built
        let restoreBegin = ContinuousClock.now
        buildMilliseconds = MigrationSender.seconds(restoreBegin - buildBegin) * 1000
        defer { restoreMilliseconds = MigrationSender.seconds(ContinuousClock.now - restoreBegin) * 1000 }
        if checksCPUID { try Self.checkCPUID(commonCPUID, supported: built.commonCPUID) }
        do {
            try VMSnapshotter.RestorePlan(tree: tree, header: header, built: built).apply(to: built)
        } catch {
            throw MigrationError("the VM's state was refused: \(error)")
        }
    }

    /// The guest's CPU features (leaf 1 ECX/EDX, leaf 7 EBX/ECX/EDX) must be ones this host
    /// gives the vCPUs it builds (`supported`: such a vCPU's CPUID), but for OSXSAVE, which
    /// follows the guest's CR4.
    static func checkCPUID(_ guest: [CPUIDEntry], supported: [CPUIDEntry]) throws(MigrationError) {
        let checks: [(function: UInt32, register: String, ignored: UInt32)] = [
            (1, "ecx", 1 << 27), (1, "edx", 0),
            (7, "ebx", 0), (7, "ecx", 0), (7, "edx", 0),
        ]
        func value(_ entry: CPUIDEntry, _ register: String) -> UInt32 {
            switch register {
            case "ebx": entry.ebx
            case "ecx": entry.ecx
            default: entry.edx
            }
        }
        for check in checks {
            guard let wanted = guest.first(where: { $0.function == check.function && $0.index == 0 }) else { continue }
            let offered = supported.first { $0.function == check.function && $0.index == 0 }
            let missing = value(wanted, check.register) & ~(offered.map { value($0, check.register) } ?? 0) & ~check.ignored
            if missing != 0 {
                throw MigrationError("this host's CPU lacks features the guest uses: CPUID leaf \(check.function) \(check.register.uppercased()) bits 0x\(String(missing, radix: 16))")
            }
        }
    }
}
