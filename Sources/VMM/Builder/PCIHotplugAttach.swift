import Devices
import DeviceModel
import HostSystem
import Logging
import PCI
import Synchronization

/// What hot-adding a device needs from the machine `build()` made: the builder and the attach
/// context of the boot devices, the PCI hotplug controller and the Generic Event Device that
/// tells the guest.
struct PCIHotplugSupport: Sendable {
    let builder: VMBuilder
    let context: VirtioAttachContext
    let controller: ACPIPCIHotplugController
    let ged: ACPIGenericEventDevice
    /// Where the guest's ejections go.
    let ejections: EjectionRoute
}

/// Where the guest's ejections (`B0EJ` writes, made on a vCPU thread) are carried out. Releasing
/// a device closes files, drops locks and changes KVM's memory slots and interrupt routes, which
/// a vCPU thread's seccomp filter does not allow: the VMM routes them to its main thread. With no
/// route (a machine driven directly, as in tests), the device is released at once.
final class EjectionRoute: Sendable {
    /// Takes one ejection: (segment, device number).
    typealias Handler = @Sendable (UInt16, UInt8) -> Void
    private let handler = Mutex<Handler?>(nil)
    private let deviceManager: @Sendable () -> DeviceManager?
    private let logger: Logger

    init(logger: Logger, deviceManager: @escaping @Sendable () -> DeviceManager?) {
        self.logger = logger
        self.deviceManager = deviceManager
    }

    /// Sends the ejections to `handler` from now on.
    func route(to handler: @escaping Handler) { self.handler.withLock { $0 = handler } }

    /// Carries out (or routes) the ejection of device `slot` of `segment`.
    func eject(segment: UInt16, slot: UInt8) {
        if let handler = handler.withLock({ $0 }) {
            handler(segment, slot)
            return
        }
        release(segment: segment, slot: slot)
    }

    /// Releases the removable device at the slot; returns it (nil when there is none).
    @discardableResult
    func release(segment: UInt16, slot: UInt8) -> ManagedDevice? {
        guard let manager = deviceManager() else { return nil }
        if let device = manager.eject(segment: segment, slot: Int(slot)) {
            logger.info("the guest ejected \(device.id) (slot \(slot) of PCI segment \(segment))")
            return device
        }
        logger.warning("the guest ejected slot \(slot) of PCI segment \(segment), which holds no removable device")
        return nil
    }
}

extension VMBuilder {
    /// Cloud Hypervisor's PCI hotplug registers on the MMIO bus at `base` (a page of the 32-bit
    /// device window, described by the DSDT's `\_SB_.PHPR`): a slot the guest ejects is
    /// released by `deviceManager`, through the returned route.
    func attachPCIHotplug(mmio: Bus, base: UInt64, deviceManager: DeviceManager) throws -> (ACPIPCIHotplugController, EjectionRoute) {
        let route = EjectionRoute(logger: logger) { [weak deviceManager] in deviceManager }
        let controller = ACPIPCIHotplugController { segment, slot in route.eject(segment: segment, slot: slot) }
        try mmio.insert(controller, base: base, length: ACPIPCIHotplugController.registerSize)
        return (controller, route)
    }
}

extension DeviceRegistration {
    /// Makes `entry` (a virtio-pci function) removable: once the guest ejects it, its slot,
    /// BAR windows and their allocation, notify ioeventfds, MSI-X routes and irqfds are given
    /// back, then `release` lets go of what its kind holds (image locks, TAP queues, memory
    /// slot, sockets), in reverse order of `attachVirtio`.
    static func removable(_ entry: ManagedDevice, attachment: VirtioPCIAttachment, context: VirtioAttachContext,
                          release: @escaping @Sendable (DeviceManager) -> Void = { _ in }) -> ManagedDevice {
        var entry = entry
        let allocated = attachment.transport.bars
        entry.unplug = { deviceManager in
            let transport = attachment.transport
            _ = try? context.segment.bus.remove(at: attachment.slot)
            attachment.reregisterNotifiers(vm: context.vm, events: context.events, mapped: false)
            for bar in transport.bars where bar.address != 0 {
                if BARMover.isWindow(of: transport, index: bar.index, at: bar.address, on: context.mmio) {
                    _ = try? context.mmio.remove(base: bar.address)
                }
            }
            context.mover.untrack(attachment)
            attachment.routing.release()
            for bar in allocated { deviceManager.freeBAR(bar) }
            release(deviceManager)
        }
        return entry
    }
}
