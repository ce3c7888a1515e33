import CLinux
import DeviceModel
import GuestMemory
import HostSystem
import Hypervisor
import Interrupts
import Logging
import PCI
import RateLimiter
import Synchronization
import BlockStorage
import VirtioDevices
import VMAllocator

/// A virtio device on a PCI segment: its transport, its MSI-X vectors, the ioeventfds that
/// carry the driver's queue notifications to the event loop, and what keeps its backend open.
final class VirtioPCIAttachment: Sendable {
    let transport: VirtioPCIDevice
    let routing: KVMMSIXRouting
    let backend: OwnedFileDescriptor?
    /// Whether another process reads the notify eventfds (a vhost-user back-end): then the
    /// event loop leaves them alone, except those of ``servedHere``.
    let servedElsewhere: Bool
    /// The queues the VMM serves although the others are served elsewhere (vhost-user-net's
    /// control queue).
    let servedHere: Set<Int>
    /// The device number on the segment's bus.
    let slot: Int
    /// The endpoint id (`segment << 16 | BDF`) the virtual IOMMU translates this device's
    /// addresses for, when it sits behind it (`iommu=on`).
    let iommuEndpoint: UInt32?
    private let notifiers = Mutex<[(queue: Int, event: EventFD, address: UInt64)]>([])
    /// One eventfd per queue for the attachment's whole life, so that a BAR move keeps the
    /// descriptor a back-end was given.
    private let kicks = Mutex<[Int: EventFD]>([:])

    init(transport: VirtioPCIDevice, routing: KVMMSIXRouting, backend: OwnedFileDescriptor?, slot: Int, servedElsewhere: Bool = false,
         servedHere: Set<Int> = [], iommuEndpoint: UInt32? = nil) {
        self.transport = transport
        self.routing = routing
        self.backend = backend
        self.slot = slot
        self.iommuEndpoint = iommuEndpoint
        self.servedElsewhere = servedElsewhere
        self.servedHere = servedHere
    }

    /// Whether the event loop serves `queue`'s notifications.
    func watches(queue: Int) -> Bool { !servedElsewhere || servedHere.contains(queue) }

    /// The eventfd the driver's notifications of `queue` arrive on (made on first use).
    func kickEvent(queue: Int) throws -> EventFD {
        if let event = kicks.withLock({ $0[queue] }) { return event }
        let event = try EventFD()
        kicks.withLock { $0[queue] = event }
        return event
    }

    /// Registers one ioeventfd per queue at its notify address (16-bit writes, as Linux's
    /// virtio-pci driver makes them) and processes the queue on the event loop when it fires
    /// (unless a back-end process reads them).
    func registerNotifiers(vm: any VirtualMachine, events: EventManager) throws {
        for queue in 0..<transport.device.queueMaxSizes.count {
            guard let address = transport.notifyAddress(queue: queue) else { continue }
            let event = try kickEvent(queue: queue)
            try vm.registerIOEventFD(event, address: .mmio(address), length: 2, datamatch: nil)
            let transport = self.transport
            if watches(queue: queue) {
                try events.add(event.rawValue, events: [.readable]) { _ in
                    _ = try? event.read()
                    transport.notifyQueue(queue)
                }
            }
            notifiers.withLock { $0.append((queue, event, address)) }
        }
        // Notify writes the ioeventfds do not catch (other widths) reach the BAR on a vCPU
        // thread: signal the queue's eventfd so that the event loop serves them too.
        transport.forwardNotifications { [weak self] queue in
            guard let event = self?.notifiers.withLock({ list in list.first { $0.queue == queue }?.event }) else { return }
            try? event.signal()
        }
    }

    /// Moves the ioeventfds after the guest moved BAR 0; with `mapped` false (the new
    /// window could not be mapped, or the BAR was cleared) they are only removed, so
    /// that they cannot catch writes meant for whatever lives at that address.
    func reregisterNotifiers(vm: any VirtualMachine, events: EventManager, mapped: Bool = true) {
        let old = notifiers.withLock { list -> [(queue: Int, event: EventFD, address: UInt64)] in
            defer { list.removeAll() }
            return list
        }
        for notifier in old {
            if watches(queue: notifier.queue) { try? events.remove(notifier.event.rawValue) }
            try? vm.unregisterIOEventFD(notifier.event, address: .mmio(notifier.address), length: 2, datamatch: nil)
        }
        if mapped { try? registerNotifiers(vm: vm, events: events) }
    }
}

/// Follows the guest's BAR moves: the MMIO bus mapping and the notify ioeventfds move with them.
///
/// The MMIO bus is held weakly: the bus holds the ECAM window, which holds the PCI bus,
/// which holds this object; a strong reference would keep a stopped VM (its RAM, its open
/// disk images and their locks) alive after a reboot.
final class BARMover: PCIDeviceRelocation, Sendable {
    weak let mmio: Bus?
    let vm: any VirtualMachine
    let events: EventManager
    let logger: Logger
    private let attachments = Mutex<[ObjectIdentifier: VirtioPCIAttachment]>([:])

    init(mmio: Bus, vm: any VirtualMachine, events: EventManager, logger: Logger) {
        self.mmio = mmio
        self.vm = vm
        self.events = events
        self.logger = logger
    }

    func track(_ attachment: VirtioPCIAttachment) {
        attachments.withLock { $0[ObjectIdentifier(attachment.transport)] = attachment }
    }

    /// Stops following an attachment (its device was ejected).
    func untrack(_ attachment: VirtioPCIAttachment) {
        attachments.withLock { $0[ObjectIdentifier(attachment.transport)] = nil }
    }

    func moveBAR(_ change: BARReprogram, of device: any PCIDevice) {
        logger.info("\(device.name): BAR \(change.index) moves from 0x\(String(change.oldAddress, radix: 16)) to 0x\(String(change.newAddress, radix: 16))")
        guard let mmio else { return }
        // Only this BAR's own window comes off the bus: when the guest had put the BAR over
        // another window (refused below), that address belongs to someone else (the ECAM
        // window, another device's BAR) and must stay mapped.
        if change.oldAddress != 0, Self.isWindow(of: device, index: change.index, at: change.oldAddress, on: mmio) {
            _ = try? mmio.remove(base: change.oldAddress)
        }
        var mapped = false
        if change.newAddress != 0 {
            do {
                try mmio.insert(PCIBARRegion(device: device, index: change.index), base: change.newAddress, length: change.size)
                mapped = true
            } catch {
                logger.error("\(device.name): cannot map BAR \(change.index) at 0x\(String(change.newAddress, radix: 16)): \(error)")
            }
        }
        // The device's configuration already holds the new address: move its notifiers.
        if let attachment = attachments.withLock({ $0[ObjectIdentifier(device as AnyObject)] }) {
            attachment.reregisterNotifiers(vm: vm, events: events, mapped: mapped)
        }
    }

    /// Whether the mapping that starts at `address` on `mmio` is BAR `index` of `device`.
    static func isWindow(of device: any PCIDevice, index: Int, at address: UInt64, on mmio: Bus) -> Bool {
        guard let (mapped, offset) = mmio.resolve(address), offset == 0, let region = mapped as? PCIBARRegion else { return false }
        return region.index == index && ObjectIdentifier(region.device as AnyObject) == ObjectIdentifier(device as AnyObject)
    }
}

/// What every virtio-pci attachment needs from the VM being built.
struct VirtioAttachContext: Sendable {
    let vm: any VirtualMachine
    let memory: GuestMemory
    let segment: PCISegment
    let mmio: Bus
    let router: GSIRouter
    let mover: BARMover
    let events: EventManager
    /// Whether devices are hot-added (a hot-added disk gets a 64-bit BAR too).
    var hotplug = false
    /// Where a snapshot's devices were, by id: a restore puts them there again.
    var placements: [String: DevicePlacement] = [:]
    /// The virtual IOMMU's table, when the VM has one: devices with `iommu=on` translate through it.
    var iommu: IommuMapping?

    /// The same context for a device on `segment`.
    func on(_ segment: PCISegment) -> VirtioAttachContext {
        var context = VirtioAttachContext(vm: vm, memory: memory, segment: segment, mmio: mmio, router: router, mover: mover, events: events)
        context.hotplug = hotplug
        context.placements = placements
        context.iommu = iommu
        return context
    }
}

extension VMBuilder {
    /// Puts `device` (Cloud Hypervisor id `id`) on the context's PCI segment behind a
    /// virtio-pci transport: BAR 0 from the segment's 64-bit window, or its 32-bit window for a
    /// disk present at boot on segment 0 (``BARWindows/uses64BitBAR(deviceType:segment:hotplug:)``),
    /// or where the context's placement for `id` says (a restore); MSI-X vectors routed to KVM,
    /// queue notifications through ioeventfds. The device takes slot `slot` (a configuration's
    /// `pci_device_id`) or the lowest free one. With `behindIOMMU` (`iommu=on`) its queues
    /// translate the driver's addresses through the context's virtual IOMMU, as the endpoint
    /// `segment << 16 | BDF`, and it offers `VIRTIO_F_ACCESS_PLATFORM`. Returns the attachment
    /// and the function's PCI address (`SSSS:00:DD.0`).
    func attachVirtio(_ device: any VirtioDevice, id: String, context: VirtioAttachContext, bars: inout BARWindows,
                      keepOpen: OwnedFileDescriptor? = nil, servedElsewhere: Bool = false, servedHere: Set<Int> = [],
                      slot wanted: UInt8? = nil, behindIOMMU: Bool = false) throws -> (VirtioPCIAttachment, String) {
        var translator: IommuEndpoint?
        var chosen = wanted.map(Int.init)
        if behindIOMMU {
            guard let mapping = context.iommu else {
                throw VMMError(description: "\(id) asks for iommu=on but the VM has no virtual IOMMU")
            }
            // The endpoint id needs the slot before the transport exists: take the lowest free one now.
            let bus = context.segment.bus
            guard let slot = chosen ?? (0..<PCIBus.deviceCount).first(where: { bus.device(at: $0) == nil }) else { throw PCIError.busFull }
            chosen = slot
            translator = mapping.endpoint(UInt32(context.segment.id) << 16 | UInt32(slot) << 3)
        }
        let routing = try KVMMSIXRouting(router: context.router, count: device.queueMaxSizes.count + 1)
        let saved = context.placements[id]?.bars.first { $0.index == VirtioPCILayout.barIndex }
        let use64Bit = BARWindows.uses64BitBAR(deviceType: device.deviceType, segment: context.segment.id, hotplug: context.hotplug)
        let bar = try bars.allocateBAR(index: VirtioPCILayout.barIndex, size: VirtioPCILayout.barSize, use64Bit: use64Bit, saved: saved)
        do {
            let transport = try VirtioPCIDevice(device: device, memory: context.memory, msixRouting: routing, barAddress: bar.address,
                                                barKind: bar.kind, translator: translator)
            let slot = try context.segment.bus.add(transport, at: chosen)
            do {
                try context.mmio.insert(PCIBARRegion(device: transport, index: 0), base: bar.address, length: bar.size)
            } catch {
                _ = try? context.segment.bus.remove(at: slot)
                throw error
            }
            let attachment = VirtioPCIAttachment(transport: transport, routing: routing, backend: keepOpen, slot: slot,
                                                 servedElsewhere: servedElsewhere, servedHere: servedHere, iommuEndpoint: translator?.id)
            try attachment.registerNotifiers(vm: context.vm, events: context.events)
            context.mover.track(attachment)
            let address = "\(hex4(context.segment.id)):00:\(slot < 16 ? "0" : "")\(String(slot, radix: 16)).0"
            logger.info("virtio-\(device.deviceType) at \(address), BAR 0 (\(bar.kind)) at 0x\(String(bar.address, radix: 16))\(behindIOMMU ? ", behind the virtual IOMMU" : "")")
            return (attachment, address)
        } catch {
            bars.free(bar)
            throw error
        }
    }

    /// Attaches virtio-rng (`--rng src=...`).
    func attachVirtioRng(_ config: RngConfig, context: VirtioAttachContext, bars: inout BARWindows) throws -> (VirtioPCIAttachment, String) {
        let source = try OwnedFileDescriptor(path: config.src, flags: O_RDONLY)
        let rng = VirtioRng(source: FileEntropySource(fileDescriptor: source.rawValue))
        logger.info("virtio-rng: entropy from \(config.src)")
        return try attachVirtio(rng, id: "_rng", context: context, bars: &bars, keepOpen: source, behindIOMMU: config.pci.iommu)
    }

    /// Attaches one virtio-blk disk (`--disk path=...`).
    /// The disk is throttled by `rateLimiter` (its own, or its `--rate-limit-group`'s), whose
    /// wake-up the caller installs.
    func attachVirtioBlock(_ config: DiskConfig, id: String, context: VirtioAttachContext,
                           bars: inout BARWindows, rateLimiter: RateLimiter?) throws -> (VirtioPCIAttachment, String, VirtioBlock, any BlockBackend) {
        let backend = try DiskImageOpener.open(config)
        let serial = config.serial.map { Array($0.utf8) } ?? DiskImageOpener.defaultSerial(path: config.path ?? "")
        let options = VirtioBlock.Options(serial: serial, queueCount: config.numQueues, queueSize: config.queueSize,
                                          rateLimiter: rateLimiter)
        var asyncQueues: [AsyncBlockQueue] = []
        do {
            asyncQueues = try VirtioBlock.makeAsyncQueues(backend: backend, options: options)
        } catch {
            logger.warning("\(id): no io_uring ring (\(error)); the disk runs synchronously")
        }
        let block = VirtioBlock(backend: backend, options: options, asyncQueues: asyncQueues)
        let (attachment, address) = try attachVirtio(block, id: id, context: context, bars: &bars, slot: config.pciDeviceID,
                                                     behindIOMMU: config.iommu)
        let transport = attachment.transport
        for (index, queue) in asyncQueues.enumerated() {
            try context.events.add(queue.eventDescriptor, events: [.readable]) { _ in
                transport.serveDeviceEvent { () throws(VirtioDeviceError) in try block.processCompletions(index) }
            }
        }
        logger.info("\(id): \(config.path ?? "?"), \(backend.size) bytes\(config.readonly ? ", read-only" : "")\(config.direct ? ", O_DIRECT" : ""), \(config.numQueues) queue(s) of \(config.queueSize), \(Self.engineDescription(config, backend: backend, block: block))")
        return (attachment, address, block, backend)
    }

    /// How a disk's requests run, with the reason when not through io_uring (Cloud
    /// Hypervisor logs the same choice when it opens the image).
    static func engineDescription(_ config: DiskConfig, backend: any BlockBackend, block: VirtioBlock) -> String {
        if !block.asyncQueues.isEmpty { return "io_uring" }
        if config.disableIoUring { return "synchronous (_disable_io_uring=on)" }
        if let reason = IoUringEngine.unsupportedReason { return "synchronous (io_uring unavailable: \(reason))" }
        return "synchronous"
    }

    /// The device-manager entry of a virtio-blk disk (boot or hotplug): counters, image
    /// locks, resize, the drain a pause runs, and on unplug the requests in flight waited
    /// for, the completion eventfds taken off the event loop and the image locks released.
    static func blockEntry(id: String, attachment: VirtioPCIAttachment, address: String, block: VirtioBlock, backend: any BlockBackend,
                           context: VirtioAttachContext) -> ManagedDevice {
        var entry = DeviceRegistration.virtio(id: id, kind: "virtio-block", attachment: attachment, address: address,
                                              mover: context.mover, counters: { block.counters.dictionary })
        entry.releaseLocks = { backend.releaseLocks() }
        entry.retakeLocks = { try backend.retakeLocks() }
        entry.resize = { size in try block.resize(to: size) }
        entry.drain = { block.drain() }
        let events = context.events
        return DeviceRegistration.removable(entry, attachment: attachment, context: context) { _ in
            block.reset()
            for queue in block.asyncQueues { try? events.remove(queue.eventDescriptor) }
            backend.releaseLocks()
        }
    }
}

extension VMBuilder {
    /// A rate limiter's buckets for the log: "10485760 bytes/s, 1000 ops/s".
    static func describe(_ limiter: RateLimiter) -> String {
        var parts: [String] = []
        if let bytes = limiter.bandwidth { parts.append("\(Int(bytes.tokensPerSecond)) bytes/s") }
        if let ops = limiter.operations { parts.append("\(Int(ops.tokensPerSecond)) ops/s") }
        return parts.joined(separator: ", ")
    }
}

/// `value` as four hexadecimal digits (a PCI segment number).
func hex4(_ value: UInt16) -> String {
    let digits = String(value, radix: 16)
    return String(repeating: "0", count: max(0, 4 - digits.count)) + digits
}
