import DeviceModel
import HostSystem
import Hypervisor

/// An interrupt line backed by an irqfd: each trigger is one edge on `gsi`, injected by the
/// kernel without a trip through the VMM's vCPU threads.
final class IRQFDLine: InterruptLine {
    let event: EventFD
    let gsi: UInt32

    /// Creates the eventfd and registers it with `vm` for `gsi`.
    init(vm: any VirtualMachine, gsi: UInt32) throws {
        event = try EventFD()
        self.gsi = gsi
        try vm.registerIRQFD(event, gsi: gsi, resample: nil)
    }

    func trigger() throws {
        try event.signal()
    }
}
