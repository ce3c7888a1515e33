// vm.resize-disk as Cloud Hypervisor carries it out: the disk of a booted VM (running or
// paused) changes size, and the guest learns it from a configuration-change interrupt.

extension VMMController {
    /// `vm.resize-disk {id, desired_size}`: resizes the image behind the disk `id` (a raw file
    /// grows or shrinks; a qcow2 image grows; a block device must already have the size) and
    /// updates the capacity the guest sees. Refused before boot, while migrating, for an
    /// unknown id or a size that is not a multiple of 512 bytes, each with the reason.
    public func resizeDisk(_ request: VMResizeDisk) throws(ControlError) {
        try slot.withLock { (slot: inout Slot) throws(ControlError) in
            guard slot.config != nil else { throw .vmNotCreated }
            guard let instance = slot.instance else {
                throw .failed(action: "vm.resize-disk", reason: "the VM is not booted: a disk is resized on a running or paused VM")
            }
            try Self.refuseWhileMigrating(slot, "vm.resize-disk")
            guard let device = instance.built.deviceManager.device(id: request.id) else {
                throw .failed(action: "vm.resize-disk", reason: "Unknown device id: \(request.id)")
            }
            guard let resize = device.resize else {
                throw .failed(action: "vm.resize-disk", reason: "\(request.id) is a \(device.kind) device, not a disk")
            }
            do { try resize(request.desiredSize) } catch {
                throw .failed(action: "vm.resize-disk", reason: "cannot resize \(request.id) to \(request.desiredSize) bytes: \(error)")
            }
            logger.info("\(request.id) resized to \(request.desiredSize) bytes")
        }
    }
}
