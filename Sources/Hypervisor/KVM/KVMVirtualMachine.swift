import CLinux
import HostSystem
import Synchronization

/// A KVM virtual machine (the VM file descriptor from `KVM_CREATE_VM`).
public final class KVMVirtualMachine: X86VirtualMachine {
    /// The VM file descriptor.
    public let descriptor: OwnedFileDescriptor
    /// The hypervisor it belongs to (kept alive for the vCPU mapping size).
    public let hypervisor: KVMHypervisor
    private let slots = Mutex<[UInt32: MemorySlot]>([:])
    /// Serialises the vCPUs draining the coalesced ring, so that writes reach devices in order.
    let coalescedDrain = CoalescedRing.Lock()
    /// Where the coalesced ring page is in each vCPU's mapping (`KVM_CAP_COALESCED_MMIO`'s
    /// page offset), or nil when KVM has none. Asked once, when the VM is made: a zone may
    /// be registered later on a vCPU thread, whose filter has no `KVM_CHECK_EXTENSION`.
    let coalescedRingOffset: Int?
    /// Whether KVM coalesces port I/O (`KVM_CAP_COALESCED_PIO`, Linux 4.20), asked once.
    private let coalescedPortIO: Bool

    /// Registers a coalesced port I/O zone (`KVM_CAP_COALESCED_PIO`, Linux 4.20).
    ///
    /// The corresponding KVM ioctl is `KVM_REGISTER_COALESCED_MMIO` with `pio` set.
    public func registerCoalescedPortIO(port: UInt16, length: UInt32) throws(HypervisorError) -> Bool {
        guard coalescedPortIO, let ring = coalescedRingOffset,
              ring + MemoryMapping.pageSize <= hypervisor.vcpuMmapSize else { return false }
        if clinux_kvm_coalesced_zone(fd, UInt64(port), length, 1, 0) != 0 {
            throw .ioctlFailed(name: "KVM_REGISTER_COALESCED_MMIO",
                               SystemError.current("ioctl(KVM_REGISTER_COALESCED_MMIO, pio \(port)+\(length))"))
        }
        return true
    }

    /// Removes a coalesced port I/O zone: its writes exit again.
    ///
    /// The corresponding KVM ioctl is `KVM_UNREGISTER_COALESCED_MMIO` with `pio` set.
    public func unregisterCoalescedPortIO(port: UInt16, length: UInt32) throws(HypervisorError) {
        if clinux_kvm_coalesced_zone(fd, UInt64(port), length, 1, 1) != 0 {
            throw .ioctlFailed(name: "KVM_UNREGISTER_COALESCED_MMIO",
                               SystemError.current("ioctl(KVM_UNREGISTER_COALESCED_MMIO, pio \(port)+\(length))"))
        }
    }

    /// A reader of the coalesced ring for threads that are not vCPUs: the first vCPU's ring
    /// page, with its mapping kept alive here (every vCPU maps the same page).
    private let sharedRing = Mutex<(reader: CoalescedRing, mapping: MemoryMapping)?>(nil)

    /// Hands every write queued in the coalesced ring to `body`, oldest first, from any thread.
    public func drainCoalescedWrites(_ body: (CoalescedWrite) -> Void) {
        guard let reader = sharedRing.withLock({ $0?.reader }) else { return }
        reader.drain(body)
    }

    /// Which in-kernel devices this VM has (set by `createIRQChip`, `createPIT` and enabling
    /// `KVM_CAP_SPLIT_IRQCHIP`), so that `state()` saves exactly those.
    let inKernel = Mutex<InKernelDevices>(InKernelDevices())
    /// In-kernel devices made by `createGICv3`, kept open as long as the VM.
    let retainedDevices = Mutex<[KVMDevice]>([])

    /// The in-kernel devices a KVM VM can have.
    struct InKernelDevices {
        var irqchip = false
        var lapic = false
        var pit = false
    }

    init(descriptor: OwnedFileDescriptor, hypervisor: KVMHypervisor) {
        self.descriptor = descriptor
        self.hypervisor = hypervisor
        let pages = Int(hypervisor.checkExtension(KVM_CAP_COALESCED_MMIO))
        coalescedRingOffset = pages > 0 ? pages * MemoryMapping.pageSize : nil
        coalescedPortIO = hypervisor.checkExtension(KVM_CAP_COALESCED_PIO) > 0
    }

    private var fd: Int32 { descriptor.rawValue }

    // MARK: Memory

    /// Registers or replaces a memory slot, refusing one that overlaps another slot.
    ///
    /// The corresponding KVM ioctl is `KVM_SET_USER_MEMORY_REGION`.
    public func setMemorySlot(_ slot: MemorySlot) throws(HypervisorError) {
        let page = UInt64(MemoryMapping.pageSize)
        guard slot.size > 0 else { throw .invalidMemorySlot(slot: slot.slot, reason: "its size is 0 (use removeMemorySlot to delete a slot)") }
        guard slot.size % page == 0, slot.guestAddress % page == 0, UInt(bitPattern: slot.hostAddress) % UInt(page) == 0 else {
            throw .invalidMemorySlot(slot: slot.slot, reason: "guest address \(hex(slot.guestAddress)), size \(hex(slot.size)) and host address must all be multiples of the page size \(hex(page))")
        }
        guard slot.guestAddress.addingReportingOverflow(slot.size - 1).overflow == false else {
            throw .invalidMemorySlot(slot: slot.slot, reason: "it runs past the end of the 64-bit address space")
        }
        let maxSlots = hypervisor.maxMemorySlots
        if maxSlots > 0, slot.slot >= UInt32(maxSlots) {
            throw .invalidMemorySlot(slot: slot.slot, reason: "KVM allows slot numbers below \(maxSlots)")
        }
        try slots.withLock { (table: inout [UInt32: MemorySlot]) throws(HypervisorError) in
            for existing in table.values where existing.slot != slot.slot && existing.overlaps(slot) {
                throw .overlappingMemorySlot(slot: slot.slot, guestAddress: slot.guestAddress, size: slot.size,
                                            existingSlot: existing.slot, existingAddress: existing.guestAddress, existingSize: existing.size)
            }
            var region = kvm_userspace_memory_region(
                slot: slot.slot, flags: slot.flags.rawValue, guest_phys_addr: slot.guestAddress,
                memory_size: slot.size, userspace_addr: UInt64(UInt(bitPattern: slot.hostAddress)))
            if let previous = table[slot.slot], previous.guestAddress != slot.guestAddress || previous.size != slot.size || previous.hostAddress != slot.hostAddress {
                // KVM cannot move or resize a slot in place: delete it first.
                var removal = kvm_userspace_memory_region(slot: slot.slot, flags: 0, guest_phys_addr: previous.guestAddress, memory_size: 0, userspace_addr: 0)
                _ = try kvmIoctl(fd, IOCTL_KVM_SET_USER_MEMORY_REGION, "KVM_SET_USER_MEMORY_REGION", &removal)
                table[slot.slot] = nil
            }
            _ = try kvmIoctl(fd, IOCTL_KVM_SET_USER_MEMORY_REGION, "KVM_SET_USER_MEMORY_REGION", &region)
            table[slot.slot] = slot
        }
    }

    /// Removes a memory slot.
    ///
    /// The corresponding KVM ioctl is `KVM_SET_USER_MEMORY_REGION` with size 0.
    public func removeMemorySlot(_ slot: UInt32) throws(HypervisorError) {
        try slots.withLock { (table: inout [UInt32: MemorySlot]) throws(HypervisorError) in
            guard let existing = table[slot] else { throw .unknownMemorySlot(slot) }
            var region = kvm_userspace_memory_region(slot: slot, flags: 0, guest_phys_addr: existing.guestAddress, memory_size: 0, userspace_addr: 0)
            _ = try kvmIoctl(fd, IOCTL_KVM_SET_USER_MEMORY_REGION, "KVM_SET_USER_MEMORY_REGION", &region)
            table[slot] = nil
        }
    }

    /// The registered slots, sorted by number.
    public var memorySlots: [MemorySlot] {
        slots.withLock { $0.values.sorted { $0.slot < $1.slot } }
    }

    /// The guest pages written in `slot` since the last call, one bit per 4 KiB page
    /// (bit `i` of word `i / 64`), and resets the log. The slot needs `.logDirtyPages`.
    ///
    /// The corresponding KVM ioctl is `KVM_GET_DIRTY_LOG`.
    public func dirtyLog(slot: UInt32) throws(HypervisorError) -> [UInt64] {
        guard let existing = slots.withLock({ $0[slot] }) else { throw .unknownMemorySlot(slot) }
        guard existing.flags.contains(.logDirtyPages) else {
            throw .invalidArgument("memory slot \(slot) was registered without dirty-page logging")
        }
        let pages = Int(existing.size / UInt64(MemoryMapping.pageSize))
        var bitmap = [UInt64](repeating: 0, count: (pages + 63) / 64)
        let code: Int32 = bitmap.withUnsafeMutableBytes { buffer in
            var log = kvm_dirty_log()
            log.slot = slot
            log.dirty_bitmap = buffer.baseAddress
            while true {
                if clinux_ioctl_ptr(fd, IOCTL_KVM_GET_DIRTY_LOG, &log) >= 0 { return 0 }
                let code = clinux_errno()
                if code != EINTR { return code }
            }
        }
        if code != 0 {
            throw .ioctlFailed(name: "KVM_GET_DIRTY_LOG", SystemError(call: "ioctl(KVM_GET_DIRTY_LOG)", errno: code))
        }
        return bitmap
    }

    // MARK: vCPUs

    /// Creates vCPU `id` as the protocol type.
    public func createVCPU(id: UInt32) throws(HypervisorError) -> any VirtualCPU {
        try createKVMVCPU(id: id)
    }

    /// Creates vCPU `id` and maps its `kvm_run` structure.
    ///
    /// The corresponding KVM ioctl is `KVM_CREATE_VCPU`.
    public func createKVMVCPU(id: UInt32) throws(HypervisorError) -> KVMVCPU {
        let vcpuFD = try kvmIoctl(fd, IOCTL_KVM_CREATE_VCPU, "KVM_CREATE_VCPU", value: UInt(id))
        let owned = OwnedFileDescriptor(adopting: vcpuFD)
        do {
            let mapping = try MemoryMapping(file: owned, size: hypervisor.vcpuMmapSize, options: [.shared])
            if let ring = coalescedRingOffset, ring + MemoryMapping.pageSize <= mapping.size {
                // SAFETY: the ring page lies inside `mapping`, which the vCPU keeps.
                let reader = CoalescedRing(page: mapping.baseAddress + ring, pageSize: MemoryMapping.pageSize, lock: coalescedDrain)
                sharedRing.withLock { shared in if shared == nil { shared = (reader, mapping) } }
                return KVMVCPU(id: id, descriptor: owned, runMapping: mapping, vm: self, coalescedRing: reader)
            }
            return KVMVCPU(id: id, descriptor: owned, runMapping: mapping, vm: self)
        } catch {
            throw .host(error)
        }
    }

    // MARK: Interrupts and events

    /// Makes a signal on `eventfd` inject `gsi`.
    ///
    /// The corresponding KVM ioctl is `KVM_IRQFD`.
    public func registerIRQFD(_ eventfd: EventFD, gsi: UInt32, resample: EventFD? = nil) throws(HypervisorError) {
        var request = kvm_irqfd()
        request.fd = UInt32(bitPattern: eventfd.rawValue)
        request.gsi = gsi
        if let resample {
            request.flags = UInt32(KVM_IRQFD_FLAG_RESAMPLE)
            request.resamplefd = UInt32(bitPattern: resample.rawValue)
        }
        _ = try kvmIoctl(fd, IOCTL_KVM_IRQFD, "KVM_IRQFD", &request)
    }

    /// Undoes `registerIRQFD`.
    ///
    /// The corresponding KVM ioctl is `KVM_IRQFD` with `KVM_IRQFD_FLAG_DEASSIGN`.
    public func unregisterIRQFD(_ eventfd: EventFD, gsi: UInt32) throws(HypervisorError) {
        var request = kvm_irqfd()
        request.fd = UInt32(bitPattern: eventfd.rawValue)
        request.gsi = gsi
        request.flags = UInt32(KVM_IRQFD_FLAG_DEASSIGN)
        _ = try kvmIoctl(fd, IOCTL_KVM_IRQFD, "KVM_IRQFD", &request)
    }

    // The ioeventfd flag bits (enum-derived macros Swift does not import).
    private static let ioeventDatamatch: UInt32 = 1 << 0
    private static let ioeventPIO: UInt32 = 1 << 1
    private static let ioeventDeassign: UInt32 = 1 << 2

    private func ioeventfd(_ eventfd: EventFD, address: IOEventAddress, length: UInt32, datamatch: UInt64?, deassign: Bool) throws(HypervisorError) {
        guard [0, 1, 2, 4, 8].contains(length) else {
            throw .invalidArgument("an ioeventfd length must be 0 (any), 1, 2, 4 or 8 bytes, not \(length)")
        }
        if datamatch != nil, length == 0 {
            throw .invalidArgument("an ioeventfd with a data match needs a length of 1, 2, 4 or 8 bytes")
        }
        var request = kvm_ioeventfd()
        request.fd = eventfd.rawValue
        request.len = length
        switch address {
        case .pio(let port):
            request.addr = UInt64(port)
            request.flags |= Self.ioeventPIO
        case .mmio(let address):
            request.addr = address
        }
        if let datamatch {
            request.datamatch = datamatch
            request.flags |= Self.ioeventDatamatch
        }
        if deassign { request.flags |= Self.ioeventDeassign }
        _ = try kvmIoctl(fd, IOCTL_KVM_IOEVENTFD, "KVM_IOEVENTFD", &request)
    }

    /// Makes guest writes to `address` signal `eventfd` without a vCPU exit.
    ///
    /// The corresponding KVM ioctl is `KVM_IOEVENTFD`.
    public func registerIOEventFD(_ eventfd: EventFD, address: IOEventAddress, length: UInt32, datamatch: UInt64? = nil) throws(HypervisorError) {
        try ioeventfd(eventfd, address: address, length: length, datamatch: datamatch, deassign: false)
    }

    /// Undoes `registerIOEventFD`.
    ///
    /// The corresponding KVM ioctl is `KVM_IOEVENTFD` with `KVM_IOEVENTFD_FLAG_DEASSIGN`.
    public func unregisterIOEventFD(_ eventfd: EventFD, address: IOEventAddress, length: UInt32, datamatch: UInt64? = nil) throws(HypervisorError) {
        try ioeventfd(eventfd, address: address, length: length, datamatch: datamatch, deassign: true)
    }

    /// Replaces the GSI routing table.
    ///
    /// The corresponding KVM ioctl is `KVM_SET_GSI_ROUTING`.
    public func setGSIRouting(_ routes: [InterruptRoute]) throws(HypervisorError) {
        let buffer = FlexibleBuffer<kvm_irq_routing, kvm_irq_routing_entry>(count: routes.count)
        buffer.header.pointee.nr = UInt32(routes.count)
        for (i, route) in routes.enumerated() {
            var entry = kvm_irq_routing_entry()
            entry.gsi = route.gsi
            switch route {
            case .irqchip(_, let chip, let pin):
                entry.type = UInt32(KVM_IRQ_ROUTING_IRQCHIP)
                entry.u.irqchip.irqchip = chip.rawValue
                entry.u.irqchip.pin = pin
            case .msi(_, let address, let data, let deviceID):
                entry.type = UInt32(KVM_IRQ_ROUTING_MSI)
                entry.u.msi.address_lo = UInt32(truncatingIfNeeded: address)
                entry.u.msi.address_hi = UInt32(truncatingIfNeeded: address >> 32)
                entry.u.msi.data = data
                if let deviceID {
                    entry.flags = UInt32(KVM_MSI_VALID_DEVID)
                    entry.u.msi.devid = deviceID
                }
            }
            buffer.entries[i] = entry
        }
        _ = try kvmIoctl(fd, IOCTL_KVM_SET_GSI_ROUTING, "KVM_SET_GSI_ROUTING", buffer.raw)
    }

    /// Raises or lowers an in-kernel irqchip input.
    ///
    /// The corresponding KVM ioctl is `KVM_IRQ_LINE`.
    public func setIRQLine(_ irq: UInt32, active: Bool) throws(HypervisorError) {
        var level = kvm_irq_level()
        level.irq = irq
        level.level = active ? 1 : 0
        _ = try kvmIoctl(fd, IOCTL_KVM_IRQ_LINE, "KVM_IRQ_LINE", &level)
    }

    /// Injects one MSI.
    ///
    /// The corresponding KVM ioctl is `KVM_SIGNAL_MSI`.
    public func signalMSI(address: UInt64, data: UInt32) throws(HypervisorError) {
        var msi = kvm_msi()
        msi.address_lo = UInt32(truncatingIfNeeded: address)
        msi.address_hi = UInt32(truncatingIfNeeded: address >> 32)
        msi.data = data
        _ = try kvmIoctl(fd, IOCTL_KVM_SIGNAL_MSI, "KVM_SIGNAL_MSI", &msi)
    }

    // MARK: x86

    /// Places KVM's TSS pages.
    ///
    /// The corresponding KVM ioctl is `KVM_SET_TSS_ADDR`.
    public func setTSSAddress(_ address: UInt64) throws(HypervisorError) {
        _ = try kvmIoctl(fd, IOCTL_KVM_SET_TSS_ADDR, "KVM_SET_TSS_ADDR", value: UInt(address))
    }

    /// Places KVM's identity-map page.
    ///
    /// The corresponding KVM ioctl is `KVM_SET_IDENTITY_MAP_ADDR`.
    public func setIdentityMapAddress(_ address: UInt64) throws(HypervisorError) {
        var value = address
        _ = try kvmIoctl(fd, IOCTL_KVM_SET_IDENTITY_MAP_ADDR, "KVM_SET_IDENTITY_MAP_ADDR", &value)
    }

    /// Creates the in-kernel PIC, IOAPIC and local APICs.
    ///
    /// The corresponding KVM ioctl is `KVM_CREATE_IRQCHIP`.
    public func createIRQChip() throws(HypervisorError) {
        _ = try kvmIoctl(fd, IOCTL_KVM_CREATE_IRQCHIP, "KVM_CREATE_IRQCHIP", value: 0)
        inKernel.withLock { $0.irqchip = true; $0.lapic = true }
    }

    /// Creates the in-kernel PIT with a dummy PC speaker port.
    ///
    /// The corresponding KVM ioctl is `KVM_CREATE_PIT2`.
    public func createPIT() throws(HypervisorError) {
        var config = kvm_pit_config()
        config.flags = UInt32(KVM_PIT_SPEAKER_DUMMY)
        _ = try kvmIoctl(fd, IOCTL_KVM_CREATE_PIT2, "KVM_CREATE_PIT2", &config)
        inKernel.withLock { $0.pit = true }
    }

    /// Enables a VM capability (`KVM_ENABLE_CAP` on the VM).
    public func enableCapability(_ capability: UInt32, arguments: [UInt64] = []) throws(HypervisorError) {
        var request = kvm_enable_cap()
        request.cap = capability
        withUnsafeMutableBytes(of: &request.args) { raw in
            for (i, value) in arguments.prefix(4).enumerated() { raw.storeBytes(of: value, toByteOffset: i * 8, as: UInt64.self) }
        }
        _ = try kvmIoctl(fd, IOCTL_KVM_ENABLE_CAP, "KVM_ENABLE_CAP", &request)
        if capability == UInt32(KVM_CAP_SPLIT_IRQCHIP) { inKernel.withLock { $0.lapic = true } }
    }
}
