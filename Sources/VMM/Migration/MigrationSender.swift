// The source side of a live migration, in Cloud Hypervisor's order: Start, (MemoryFd per region
// with local=on), Config, pre-copy memory rounds while the VM runs until the rest fits the
// downtime, pause, the last round, State, Complete.
import GuestMemory
import Hypervisor
import Logging

/// The `Config` request's payload (Cloud Hypervisor's `VmMigrationConfig`).
struct MigrationConfigPayload: Codable {
    var vmConfig: VMConfig
    /// The CPUID the guest sees (vCPU 0's), for the destination to check its host offers it.
    var commonCPUID: [CPUIDEntry]
    /// The memory manager: the guest's memory ranges, boot RAM and hot-added regions, with
    /// which the destination makes the same guest memory before the pages come.
    var memoryManagerData: MemoryManagerSnapshotData

    enum CodingKeys: String, CodingKey {
        case vmConfig = "vm_config", commonCPUID = "common_cpuid", memoryManagerData = "memory_manager_data"
    }
}

/// Figures of one finished migration.
struct MigrationFigures: Sendable, CustomStringConvertible {
    var seconds: Double
    var downtimeMilliseconds: Double
    var rounds: Int
    var bytes: UInt64
    /// Where the downtime went, in milliseconds: stopping the VM, the last memory round, capturing
    /// the state, and the destination taking it (State sent to its OK: building and restoring).
    var pauseMilliseconds = 0.0, lastRoundMilliseconds = 0.0, captureMilliseconds = 0.0, destinationMilliseconds = 0.0
    /// Of the capture: reading the vCPUs' and devices' state (the rest is encoding it).
    var readStateMilliseconds = 0.0
    /// The last round's bytes and the state's.
    var lastRoundBytes: UInt64 = 0, stateBytes: UInt64 = 0
    /// `value` with `digits` decimals.
    static func fixed(_ value: Double, _ digits: Int) -> String {
        var scale = 1.0
        for _ in 0..<digits { scale *= 10 }
        let scaled = Int((value * scale).rounded())
        let whole = scaled / Int(scale), fraction = String(abs(scaled % Int(scale)))
        return "\(whole).\(String(repeating: "0", count: max(0, digits - fraction.count)))\(fraction)"
    }
    var description: String {
        "\(Self.fixed(seconds, 2)) s, downtime \(Self.fixed(downtimeMilliseconds, 1)) ms, \(rounds) memory round(s), \(bytes >> 10) KiB sent"
            + " (downtime: pause \(Self.fixed(pauseMilliseconds, 1)) ms, last round \(lastRoundBytes >> 10) KiB in \(Self.fixed(lastRoundMilliseconds, 1)) ms,"
            + " state \(stateBytes >> 10) KiB captured in \(Self.fixed(captureMilliseconds, 1)) ms (read in \(Self.fixed(readStateMilliseconds, 1)) ms), restored by the destination in \(Self.fixed(destinationMilliseconds, 1)) ms)"
    }
}

/// Sends one VM to a destination VMM.
struct MigrationSender {
    let built: BuiltVM
    let request: SendMigrationData
    /// Parks the VM (vCPUs and devices); false when it did not stop.
    let pause: () -> Bool
    let logger: Logger
    /// Reports progress as Cloud Hypervisor's events (`migration-memory-iteration`).
    let event: (String, [String: String]?) -> Void

    /// Checks what can be checked before connecting: the URL, and what this VMM lacks
    /// (TLS, several connections, post-copy), and that local=on has shared memory on a unix: socket.
    static func validate(_ request: SendMigrationData, config: VMConfig) throws(ControlError) -> MigrationAddress {
        if request.tlsDir != nil {
            throw .absentFeature(AbsentFeature(field: "tls_dir", option: "tls_dir=", feature: "TLS-encrypted migration"))
        }
        if request.connections > 1 {
            throw .absentFeature(AbsentFeature(field: "connections", option: "connections=", feature: "migration over several connections"))
        }
        if request.memoryMode == .postcopy {
            throw .absentFeature(AbsentFeature(field: "memory_mode", option: "memory_mode=postcopy", feature: "post-copy migration"))
        }
        let address: MigrationAddress
        do { address = try MigrationAddress(url: request.destinationURL) } catch { throw .invalidConfig(error.description) }
        if request.local {
            guard config.memory.shared else {
                throw .failed(action: "vm.send-migration", reason: "Local migration requires shared memory or hugepages enabled (--memory shared=on)")
            }
            guard case .unix = address else {
                throw .failed(action: "vm.send-migration", reason: "local=on is only supported with unix: sockets")
            }
        }
        return address
    }

    /// Runs the migration. On return the destination owns the VM (paused or running as the
    /// source was); on a throw the VM is as it was, apart from being paused if the failure
    /// came after the pause (the caller resumes it) and its disks' locks released (the caller
    /// takes them again).
    func run(initiallyRunning: Bool, channel: MigrationChannel) throws(MigrationError) -> MigrationFigures {
        let begin = ContinuousClock.now
        try channel.send(MigrationRequest.start())
        try channel.expectOK(after: "Start")
        if request.local { try sendMemoryDescriptors(channel) }
        try sendConfig(channel)

        var rounds = 0
        var downtimeBegin = ContinuousClock.now
        var figures = MigrationFigures(seconds: 0, downtimeMilliseconds: 0, rounds: 0, bytes: 0)
        if request.local {
            // The destination maps the same memory: nothing to copy, only to stop.
            downtimeBegin = ContinuousClock.now
            if initiallyRunning, !pause() { throw MigrationError("the VM did not pause") }
            try checkVMRuns()
            figures.pauseMilliseconds = Self.milliseconds(since: downtimeBegin)
        } else {
            try MigrationMemory.startDirtyLog(built)
            let remaining = try precopy(channel, begin: begin, rounds: &rounds)
            downtimeBegin = ContinuousClock.now
            if initiallyRunning, !pause() { throw MigrationError("the VM did not pause") }
            try checkVMRuns()
            figures.pauseMilliseconds = Self.milliseconds(since: downtimeBegin)
            let lastBegin = ContinuousClock.now
            var last = try MigrationMemory.dirtyRanges(built)
            last.data += remaining.data
            try MigrationMemory.send(last, of: built.memory, over: channel)
            figures.lastRoundBytes = last.byteCount
            figures.lastRoundMilliseconds = Self.milliseconds(since: lastBegin)
            rounds += 1
        }

        // The destination opens the disks now; the source no longer writes them.
        built.deviceManager.releaseLocks()
        let captureBegin = ContinuousClock.now
        let state: [UInt8]
        do {
            let captured = try VMSnapshotter.capture(built)
            figures.readStateMilliseconds = Self.milliseconds(since: captureBegin)
            let tree = try captured.tree(memory: captured.memory, memoryFileSize: 0, configDigest: "", vmmVersion: VMMVersion.build)
            state = try SnapshotJSON.data(tree)
        } catch {
            throw MigrationError("cannot capture the VM's state: \(error)")
        }
        if !request.local {
            // Pages that capturing the state wrote (none today; Cloud Hypervisor sends them too).
            try MigrationMemory.send(try MigrationMemory.dirtyRanges(built), of: built.memory, over: channel)
        }
        figures.captureMilliseconds = Self.milliseconds(since: captureBegin)
        figures.stateBytes = UInt64(state.count)
        let stateBegin = ContinuousClock.now
        try channel.send(MigrationRequest(.state, length: UInt64(state.count)), payload: state)
        try channel.expectOK(after: "State")
        figures.destinationMilliseconds = Self.milliseconds(since: stateBegin)
        try channel.send(MigrationRequest(initiallyRunning ? .complete : .completePaused))
        try channel.expectOK(after: "Complete")
        let end = ContinuousClock.now
        figures.seconds = Self.seconds(end - begin)
        figures.downtimeMilliseconds = Self.seconds(end - downtimeBegin) * 1000
        figures.rounds = rounds
        figures.bytes = channel.bytesSent
        return figures
    }

    private static func milliseconds(since start: ContinuousClock.Instant) -> Double {
        seconds(ContinuousClock.now - start) * 1000
    }

    /// local=on: each region's memory descriptor, slot by slot (`MemoryFd`, 4 bytes of slot
    /// number with the descriptor in SCM_RIGHTS).
    private func sendMemoryDescriptors(_ channel: MigrationChannel) throws(MigrationError) {
        for (slot, region) in built.memory.regions.enumerated() {
            guard let file = region.mapping.file else {
                throw MigrationError("memory region \(slot) has no descriptor to hand over (local=on needs --memory shared=on)")
            }
            var payload = ByteWriter()
            payload.u32(UInt32(slot))
            try channel.send(MigrationRequest(.memoryFD, length: 4))
            try channel.send(payload.bytes, descriptor: file.rawValue)
            try channel.expectOK(after: "MemoryFd \(slot)")
        }
    }

    private func sendConfig(_ channel: MigrationChannel) throws(MigrationError) {
        let payload: [UInt8]
        do {
            payload = try SnapshotJSON.data(MigrationConfigPayload(
                vmConfig: built.config, commonCPUID: built.commonCPUID,
                memoryManagerData: try MemoryManagerSnapshotData.capture(built)))
        } catch {
            throw MigrationError("cannot encode the configuration: \(error)")
        }
        try channel.send(MigrationRequest(.config, length: UInt64(payload.count)), payload: payload)
        try channel.expectOK(after: "Config")
    }

    /// Memory rounds while the VM runs: all pages with data first, then the pages written
    /// meanwhile, until what is left would take less than `downtime_ms` at the measured rate
    /// (or nothing is left). Returns the ranges not sent yet. Past `timeout_s`, `Cancel`
    /// throws and `Ignore` stops the rounds there.
    private func precopy(_ channel: MigrationChannel, begin: ContinuousClock.Instant, rounds: inout Int) throws(MigrationError) -> MemoryRangeTable {
        var bytesPerSecond: Double?
        let downtime = Double(request.downtimeMS) / 1000
        while true {
            try checkVMRuns()
            let table = rounds == 0 ? built.memory.populatedRanges() : try MigrationMemory.dirtyRanges(built)
            let bytes = Double(table.byteCount)
            if bytes == 0 { return table }
            if let rate = bytesPerSecond, rate > 0, bytes / rate <= downtime {
                logger.info("migration: \(Int(bytes) >> 10) KiB left, about \(Int(bytes / rate * 1000)) ms at \(Int(rate) >> 20) MiB/s: pausing")
                return table
            }
            if Self.seconds(ContinuousClock.now - begin) >= Double(request.timeoutS) {
                if request.timeoutStrategy == .cancel {
                    throw MigrationError("the migration did not converge within timeout_s=\(request.timeoutS) s (\(Int(bytes) >> 10) KiB still dirty per round)")
                }
                logger.info("migration: timeout_s=\(request.timeoutS) reached, pausing with \(Int(bytes) >> 10) KiB left (timeout_strategy Ignore)")
                return table
            }
            let start = ContinuousClock.now
            try MigrationMemory.send(table, of: built.memory, over: channel)
            let elapsed = max(Self.seconds(ContinuousClock.now - start), 1e-6)
            bytesPerSecond = bytes / elapsed
            event("migration-memory-iteration", ["id": String(rounds)])
            rounds += 1
        }
    }

    /// Throws once the VM stopped on its own (the guest reset or powered off, a vCPU failed):
    /// its vCPUs ended, so the destination would get a machine that no longer runs. Checked
    /// before every round and once the VM is paused (a paused guest stops nothing after that).
    private func checkVMRuns() throws(MigrationError) {
        if let reason = built.exits.current {
            throw MigrationError("the VM stopped during the migration: \(reason)")
        }
    }

    static func seconds(_ duration: Duration) -> Double {
        Double(duration.components.seconds) + Double(duration.components.attoseconds) / 1e18
    }
}
