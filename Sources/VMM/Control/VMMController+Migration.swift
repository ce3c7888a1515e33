// vm.send-migration and vm.receive-migration as Cloud Hypervisor runs them: the sender checks
// the request, answers at once and migrates on its own thread (the VMM exits once the
// destination owns the VM; a failure leaves the VM running here); the receiver listens, takes
// one migration to the end and answers then.
import HostSystem
import Hypervisor

extension VMMController {
    /// `vm.send-migration`: the VM must be running or paused and no migration under way.
    public func sendMigration(_ request: SendMigrationData) throws(ControlError) {
        let (instance, running, address) = try slot.withLock { (slot: inout Slot) throws(ControlError) -> (VMInstance, Bool, MigrationAddress) in
            guard let config = slot.config else { throw .vmNotCreated }
            guard !slot.migrating else { throw .failed(action: "vm.send-migration", reason: "There is already an ongoing migration") }
            guard slot.state == .running || slot.state == .paused, let instance = slot.instance else {
                throw .invalidState(action: "vm.send-migration", state: slot.state)
            }
            guard instance.memoryRestoration?.lazy == nil || instance.memoryRestoration?.lazy?.isComplete == true else {
                throw .failed(action: "vm.send-migration", reason: "Cannot migrate while on-demand memory restore is in progress")
            }
            try Self.refuseWhileRemovingVCPUs(instance, "vm.send-migration")
            try Self.refuseWhileRemovingDevices(instance, "vm.send-migration")
            let address = try MigrationSender.validate(request, config: config)
            slot.migrating = true
            return (instance, slot.state == .running, address)
        }
        logger.info("sending migration to \(address) (local=\(request.local), downtime \(request.downtimeMS) ms, timeout \(request.timeoutS) s)")
        do {
            _ = try HostThread(name: "ch-migration") { [self] in
                self.migrate(instance, request: request, address: address, running: running)
            }
        } catch {
            slot.withLock { $0.migrating = false }
            throw .failed(action: "vm.send-migration", reason: "cannot start the migration thread: \(error)")
        }
    }

    /// The migration thread: on success the VM is gone and the VMM ends; on failure the VM runs on.
    private func migrate(_ instance: VMInstance, request: SendMigrationData, address: MigrationAddress, running: Bool) {
        monitor?.emit(source: "vm", event: "migration-started")
        let sender = MigrationSender(built: instance.built, request: request, pause: { instance.pause() }, logger: logger,
                                     event: { [monitor] name, properties in monitor?.emit(source: "vm", event: name, properties: properties) })
        var channel: MigrationChannel?
        do throws(MigrationError) {
            let connected = try MigrationChannel.connect(to: address)
            channel = connected
            let figures = try sender.run(initiallyRunning: running, channel: connected)
            connected.close()
            logger.info("migration completed: \(figures)")
            monitor?.emit(source: "vm", event: "migration-finished")
            slot.withLock { $0.migrating = false }
            migrated()
        } catch {
            logger.error("migration failed: \(error)")
            // Read before `migrating` goes false: the main thread defers a guest reset to us then.
            let stopped = instance.built.exits.current
            if let channel {
                try? channel.send(MigrationRequest(.abandon))
                channel.close()
            }
            MigrationMemory.stopDirtyLog(instance.built)
            if stopped == .reset {
                // The guest reset during the migration: its vCPUs ended, so the VM reboots now,
                // as it would have without the migration (the reboot lets go of its images).
                slot.withLock { $0.migrating = false }
                monitor?.emit(source: "vm", event: "migration-failed")
                post(.vmStopped(ObjectIdentifier(instance), .reset))
                return
            }
            do { try instance.built.deviceManager.retakeLocks() } catch {
                logger.error("after the failed migration, a disk lock could not be taken again: \(error)")
            }
            if running { instance.resume() }
            slot.withLock { $0.migrating = false }
            monitor?.emit(source: "vm", event: "migration-failed")
        }
    }

    /// `vm.receive-migration`: only when no VM exists; returns when the VM arrived (running or
    /// paused as it was on the source) or the migration failed (nothing is left behind).
    public func receiveMigration(_ request: ReceiveMigrationData) throws(ControlError) {
        try slot.withLock { (slot: inout Slot) throws(ControlError) in
            guard slot.config == nil else { throw .failed(action: "vm.receive-migration", reason: "Can't receive a migration when a VM is already created") }
        }
        if request.tlsDir != nil {
            throw .absentFeature(AbsentFeature(field: "tls_dir", option: "tls_dir=", feature: "TLS-encrypted migration"))
        }
        if request.memoryMode == .postcopy {
            throw .absentFeature(AbsentFeature(field: "memory_mode", option: "memory_mode=postcopy", feature: "post-copy migration"))
        }
        let address: MigrationAddress
        do { address = try MigrationAddress(url: request.receiverURL) } catch { throw .invalidConfig(error.description) }
        let received: MigrationReceiver.Received
        let listener: MigrationListener
        var sandbox: LandlockSandbox?
        do throws(MigrationError) { listener = try MigrationListener(address) } catch {
            throw .failed(action: "vm.receive-migration", reason: error.description)
        }
        monitor?.emit(source: "vm", event: "migration-receive-ready")
        do throws(MigrationError) {
            let channel = try listener.accept()
            monitor?.emit(source: "vm", event: "migration-receive-started")
            let builder = VMBuilder(hypervisor: hypervisor, logger: logger)
            // The VM, its memory and boot vCPUs are made when the configuration comes, while the
            // source runs; the devices when the state comes, once the source let go of its files.
            var prepared: VMBuilder.PreparedMachine?
            let receiver = MigrationReceiver(factory: MigrationMachineFactory(
                memory: { [logger] config, memoryState, files in
                    // As at vm.create: Landlock goes on before the VM's files are opened.
                    if config.landlockEnable {
                        let made = try LandlockSandbox(config: config, logger: logger)
                        try made.enter()
                        sandbox = made
                    }
                    // The boot regions first (registered in KVM slots now), then the hot-added ones.
                    let boot = VMBuilder.bootMemory(config.memory, memoryState: memoryState)
                    let bootCount = UInt32(try VMBuilder.ramRegionCount(boot))
                    let memory = try builder.createMemory(boot, files: files.filter { $0.key < bootCount })
                    prepared = try builder.prepare(config, memory: memory, memoryState: memoryState, files: files.filter { $0.key >= bootCount })
                    return memory
                },
                machine: { [self] config, memory, placements in
                    guard let made = prepared, made.memory === memory else {
                        throw VMMError(description: "the machine was not prepared with this memory")
                    }
                    return try self.buildForMigration(config, prepared: made, placements: placements)
                }))
            received = try receiver.run(channel)
            logger.info("migration received: machine built in \(MigrationFigures.fixed(received.buildMilliseconds, 1)) ms, state restored in \(MigrationFigures.fixed(received.restoreMilliseconds, 1)) ms")
        } catch {
            monitor?.emit(source: "vm", event: "migration-receive-failed")
            throw .failed(action: "vm.receive-migration", reason: error.description)
        }
        do {
            try adoptMigrated(received, sandbox: sandbox)
        } catch {
            monitor?.emit(source: "vm", event: "migration-receive-failed")
            throw .failed(action: "vm.receive-migration", reason: "\(error)")
        }
        if let sandbox { post(.sandbox(sandbox)) }
        monitor?.emit(source: "vm", event: "migration-receive-finished")
    }
}
