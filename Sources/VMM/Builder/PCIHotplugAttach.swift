import Devices
import DeviceModel
import HostSystem
import PCI

/// What hot-adding a device needs from the machine `build()` made: the builder and the attach
/// context of the boot devices, the PCI hotplug controller and the Generic Event Device that
/// tells the guest.
struct PCIHotplugSupport: Sendable {
    let builder: VMBuilder
    let context: VirtioAttachContext
    let controller: ACPIPCIHotplugController
    let ged: ACPIGenericEventDevice
}

extension VMBuilder {
    /// Cloud Hypervisor's PCI hotplug registers on the MMIO bus at `base` (a page of the 32-bit
    /// device window, described by the DSDT's `\_SB_.PHPR`): a slot the guest ejects is
    /// released by `deviceManager`.
    func attachPCIHotplug(mmio: Bus, base: UInt64, deviceManager: DeviceManager) throws -> ACPIPCIHotplugController {
        let controller = ACPIPCIHotplugController { [weak deviceManager, logger] segment, slot in
            guard let deviceManager else { return }
            if let id = deviceManager.eject(segment: segment, slot: Int(slot)) {
                logger.info("the guest ejected \(id) (slot \(slot) of PCI segment \(segment))")
            } else {
                logger.warning("the guest ejected slot \(slot) of PCI segment \(segment), which holds no removable device")
            }
        }
        try mmio.insert(controller, base: base, length: ACPIPCIHotplugController.registerSize)
        return controller
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
        let barStarts = attachment.transport.bars.map(\.address)
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
            for start in barStarts { deviceManager.freeMMIO32(at: start) }
            release(deviceManager)
        }
        return entry
    }
}
