import ACPITables
import DeviceModel
import Devices
import PCI
import VirtioDevices

/// The device manager's entries for what `VMBuilder` attaches: one short function per kind,
/// each naming the device's kind, resources and counters.
enum DeviceRegistration {
    /// The platform devices on the I/O port bus, by fixed names, each with its state.
    static func legacy(_ devices: LegacyDevices) -> [ManagedDevice] {
        var managed: [ManagedDevice] = []
        func add<D: StatefulDevice & Sendable>(_ device: D?, _ id: String, _ kind: String, port: UInt64, length: UInt64, gsi: UInt32? = nil) {
            guard let device else { return }
            managed.append(.stateful(device, id: id, kind: kind,
                                     resources: DeviceResources(pio: [(port, length)], gsis: gsi.map { [$0] } ?? [])))
        }
        add(devices.serial, "serial", "serial-16550", port: Serial16550.com1Base, length: Serial16550.registerCount, gsi: Serial16550.com1IRQ)
        add(devices.i8042, "i8042", "i8042", port: I8042.portBase, length: I8042.portLength)
        add(devices.cmos, "cmos", "cmos-rtc", port: CMOSRTC.portBase, length: CMOSRTC.portLength)
        add(devices.debugPort, "debug-port", "debug-port", port: DebugPort.port, length: DebugPort.portLength)
        add(devices.acpiShutdown, "acpi-shutdown", "acpi-shutdown", port: ACPIShutdownDevice.portBase, length: ACPIShutdownDevice.portLength)
        add(devices.pmTimer, "acpi-pm-timer", "acpi-pm-timer", port: ACPIPMTimer.portBase, length: ACPIPMTimer.portLength)
        return managed
    }

    /// A virtio-pci function: its BDF and BARs, its transport's state (configuration space,
    /// MSI-X, queues and the device's own state). After a restore, BARs the guest had moved
    /// are moved on the bus too, and every queue is notified once (a request that waited for a
    /// rate limiter's timer, which the old process took with it, is retried).
    static func virtio(id: String, kind: String, attachment: VirtioPCIAttachment, address: String, mover: BARMover,
                       counters: (@Sendable () -> [String: UInt64])? = nil) -> ManagedDevice {
        let transport = attachment.transport
        let built = transport.bars
        var entry = ManagedDevice.stateful(transport, id: id, kind: kind,
                                           resources: DeviceResources(pciBDF: address, mmio: built.map { (base: $0.address, length: $0.size) },
                                                                                      bars: built),
                                           counters: counters)
        guard let restore = entry.restoreState else { return entry }
        let queueCount = transport.device.queueMaxSizes.count
        entry.restoreState = { text in
            try restore(text)
            for bar in transport.bars {
                guard let old = built.first(where: { $0.index == bar.index }), old.address != bar.address else { continue }
                mover.moveBAR(BARReprogram(index: bar.index, kind: bar.kind, oldAddress: old.address, newAddress: bar.address,
                                           size: bar.size), of: transport)
            }
            for queue in 0..<queueCount { transport.notifyQueue(queue) }
        }
        return entry
    }

    /// A virtio-pmem function: a virtio entry whose resources also hold the persistent
    /// memory's range. With `discard_writes=on` its state cannot be saved: the guest's writes
    /// live only in this process's private copy of the file, which neither a snapshot nor a
    /// migration carries, so both are refused rather than losing them.
    static func pmem(_ pmem: AttachedPmem, file: String, discardWrites: Bool, mover: BARMover) -> ManagedDevice {
        var entry = virtio(id: pmem.id, kind: "virtio-pmem", attachment: pmem.attachment, address: pmem.address, mover: mover)
        entry.resources.mmio.append((base: pmem.range.start, length: pmem.range.size))
        entry.resources.range64 = (base: pmem.range.start, size: pmem.range.size)
        if discardWrites {
            let id = pmem.id
            entry.saveState = {
                throw VMMError(description: "\(id) maps \(file) with discard_writes=on: the guest's writes exist only in this VMM's private copy, which a snapshot or a migration does not carry; snapshot and migration of this VM are refused")
            }
        }
        return entry
    }

    /// A virtio-fs function. Its state cannot be saved: the queues' positions and the file
    /// system's open files live in the back-end (virtiofsd), which this VMM does not ask to
    /// save them (vhost-user's device-state transfer), so snapshot and migration are refused.
    static func fs(_ fs: AttachedFs, socket: String, mover: BARMover) -> ManagedDevice {
        vhostUser(id: fs.id, kind: "virtio-fs", attachment: fs.attachment, address: fs.address, mover: mover, common: fs.device.common,
                  refusal: "\(fs.id) is a virtio-fs device served by the vhost-user back-end at \(socket): its queues and open files live in that process, whose state this VMM cannot save; snapshot and migration of this VM are refused")
    }

    /// A vhost-user-blk disk. Its state cannot be saved either: the queues' positions and the
    /// requests in flight live in the back-end, which this VMM does not ask to save them, so
    /// snapshot and migration are refused. `vm.resize-disk` is refused too: the back-end owns
    /// the image and the capacity.
    static func vhostUserBlock(_ disk: AttachedVhostUserBlock, socket: String, mover: BARMover) -> ManagedDevice {
        let id = disk.id
        var entry = vhostUser(id: id, kind: "vhost-user-blk", attachment: disk.attachment, address: disk.address, mover: mover, common: disk.device.common,
                              refusal: "\(id) is a vhost-user-blk disk served by the back-end at \(socket): its queues and the requests in flight live in that process, whose state this VMM cannot save; snapshot and migration of this VM are refused")
        entry.resize = { _ in
            throw VMMError(description: "\(id) is served by the vhost-user-blk back-end at \(socket), which owns the image and its size; resize it there")
        }
        return entry
    }

    /// A vhost-user-net NIC. Its state cannot be saved either: the rings' positions and the
    /// packets in flight live in the back-end, which this VMM does not ask to save them, so
    /// snapshot and migration are refused.
    static func vhostUserNet(_ net: AttachedVhostUserNet, socket: String, mover: BARMover) -> ManagedDevice {
        vhostUser(id: net.id, kind: "vhost-user-net", attachment: net.attachment, address: net.address, mover: mover, common: net.device.common,
                  refusal: "\(net.id) is a vhost-user-net device served by the back-end at \(socket): its rings and the packets in flight live in that process, whose state this VMM cannot save; snapshot and migration of this VM are refused")
    }

    /// A virtio entry for a vhost-user device, whose saving fails with `refusal`, whose
    /// back-end is told about hot-added memory, and whose connection closes when the VM stops
    /// or goes to the machine an in-place reboot builds.
    private static func vhostUser(id: String, kind: String, attachment: VirtioPCIAttachment, address: String, mover: BARMover,
                                  common: VhostUserCommon, refusal: String) -> ManagedDevice {
        var entry = virtio(id: id, kind: kind, attachment: attachment, address: address, mover: mover)
        entry.saveState = { throw VMMError(description: refusal) }
        entry.memoryAdded = { region in try common.memoryAdded(region) }
        entry.onStop = { common.close() }
        entry.detachBackend = { common.detach().map { (common.socket, $0) } }
        return entry
    }

    /// The ACPI Generic Event Device: its register and interrupt.
    static func ged(_ device: ACPIGenericEventDevice, description: PlatformAML.GenericEventDevice) -> ManagedDevice {
        .stateful(device, id: "ged", kind: "acpi-ged",
                  resources: DeviceResources(mmio: [(description.address, ACPIGenericEventDevice.registerSize)], gsis: [description.irq]))
    }
}
