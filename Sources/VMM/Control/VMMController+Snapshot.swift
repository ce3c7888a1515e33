// vm.snapshot and vm.restore (and --restore), as Cloud Hypervisor runs them: a snapshot of a
// paused VM into a directory; a restore that creates the VM from one, paused unless asked to resume.
import HostSystem

extension VMMController {
    /// `vm.snapshot`: the VM must be paused (Cloud Hypervisor's rule); it stays paused.
    public func snapshot(destinationURL: String) throws(ControlError) {
        monitor?.emit(source: "vm", event: "snapshotting")
        try slot.withLock { (slot: inout Slot) throws(ControlError) in
            guard slot.config != nil else { throw .vmNotCreated }
            try Self.refuseWhileMigrating(slot, "vm.snapshot")
            guard slot.state == .paused, let instance = slot.instance else { throw .invalidState(action: "vm.snapshot", state: slot.state) }
            try Self.refuseWhileRemovingVCPUs(instance, "vm.snapshot")
            try Self.refuseWhileRemovingDevices(instance, "vm.snapshot")
            try enterSandbox(slot, action: "vm.snapshot")
            do throws(SnapshotError) {
                let directory = try SnapshotDirectory(url: destinationURL)
                try VMSnapshotter.save(instance.built, to: directory, vmmVersion: VMMVersion.build)
            } catch {
                throw .failed(action: "vm.snapshot", reason: error.description)
            }
        }
        monitor?.emit(source: "vm", event: "snapshotted")
    }

    /// `vm.restore`: only when no VM exists. NICs named in `net_fds` take their descriptors
    /// from `descriptors`, in order.
    public func restore(_ request: RestoreConfig, descriptors: [OwnedFileDescriptor]) throws(ControlError) {
        monitor?.emit(source: "vm", event: "restoring")
        try slot.withLock { (slot: inout Slot) throws(ControlError) in
            guard slot.config == nil else { throw .vmAlreadyCreated }
            var snapshot: LoadedSnapshot
            do throws(SnapshotError) {
                snapshot = try VMSnapshotter.load(from: try SnapshotDirectory(url: request.sourceURL))
            } catch {
                throw .failed(action: "vm.restore", reason: error.description)
            }
            var config = snapshot.config
            var remaining = descriptors[...]
            for net in request.netFDs ?? [] {
                guard let index = config.netIDs.firstIndex(of: net.id) else {
                    throw .invalidConfig("net_fds names '\(net.id)', which is not a NIC of the snapshot")
                }
                guard remaining.count >= Int(net.numFDs) else {
                    throw .invalidConfig("net_fds asks \(net.numFDs) descriptors for '\(net.id)' but only \(remaining.count) came with the request")
                }
                config.net?[index].fds = remaining.prefix(Int(net.numFDs)).map(\.rawValue)
                remaining = remaining.dropFirst(Int(net.numFDs))
            }
            if let absent = config.absentFeatures.first { throw .absentFeature(absent) }
            snapshot = LoadedSnapshot(directory: snapshot.directory, config: config, header: snapshot.header, tree: snapshot.tree)
            // As at vm.create, before the VM's files are opened and its threads start; the
            // snapshot's directory stays readable (guest memory is read from it).
            var sandbox: LandlockSandbox?
            if config.landlockEnable {
                do throws(LandlockError) {
                    sandbox = try LandlockSandbox(config: config, extra: [LandlockRule(snapshot.directory.path, "r")], logger: logger)
                    try sandbox?.enter()
                } catch {
                    throw .failed(action: "vm.restore", reason: error.description)
                }
            }
            let instance: VMInstance
            do {
                instance = try restoreInstance(snapshot, onDemand: request.memoryRestoreMode == .onDemand, prefault: request.prefault)
            } catch {
                throw .failed(action: "vm.restore", reason: "\(error)")
            }
            slot.config = config
            slot.sandbox = sandbox
            slot.instance = instance
            slot.state = .paused
            for descriptor in descriptors { slot.passed[descriptor.rawValue] = descriptor }
            if request.resume {
                instance.resume()
                slot.state = .running
            }
        }
        if let sandbox = slot.withLock({ $0.sandbox }) { post(.sandbox(sandbox)) }
        monitor?.emit(source: "vm", event: "restored")
        if request.resume { monitor?.emit(source: "vm", event: "resumed") }
        releaseStartupPagesIfAsked()
    }
}
