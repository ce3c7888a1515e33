import DeviceModel
import HostSystem
import Hypervisor
import Logging
import PCI
import Testing
@testable import VMM

/// A VM with nothing behind it: the BAR mover only needs one for ioeventfds.
final class InertVM: VirtualMachine, @unchecked Sendable {
    var memorySlots: [MemorySlot] { [] }
    func setMemorySlot(_ slot: MemorySlot) throws(HypervisorError) {}
    func removeMemorySlot(_ slot: UInt32) throws(HypervisorError) {}
    func createVCPU(id: UInt32) throws(HypervisorError) -> any VirtualCPU { throw .invalidArgument("no vCPUs in this fake") }
    func registerIRQFD(_ eventfd: EventFD, gsi: UInt32, resample: EventFD?) throws(HypervisorError) {}
    func unregisterIRQFD(_ eventfd: EventFD, gsi: UInt32) throws(HypervisorError) {}
    func registerIOEventFD(_ eventfd: EventFD, address: IOEventAddress, length: UInt32, datamatch: UInt64?) throws(HypervisorError) {}
    func unregisterIOEventFD(_ eventfd: EventFD, address: IOEventAddress, length: UInt32, datamatch: UInt64?) throws(HypervisorError) {}
    func setGSIRouting(_ routes: [InterruptRoute]) throws(HypervisorError) {}
    func setIRQLine(_ irq: UInt32, active: Bool) throws(HypervisorError) {}
    func signalMSI(address: UInt64, data: UInt32) throws(HypervisorError) {}
    func dirtyLog(slot: UInt32) throws(HypervisorError) -> [UInt64] { [] }
}

/// A PCI function with one BAR and no registers worth reading.
final class BareFunction: PCIDevice, @unchecked Sendable {
    let name: String
    init(name: String) { self.name = name }
    func readConfigRegister(_ register: Int) -> UInt32 { 0xFFFF_FFFF }
    func writeConfigRegister(_ register: Int, offset: Int, size: Int, value: UInt32) -> BARReprogram? { nil }
    func readBAR(index: Int, offset: UInt64, size: Int) -> UInt64 { 0 }
    func writeBAR(index: Int, offset: UInt64, size: Int, value: UInt64) {}
    var bars: [PCIBAR] { [] }
    func barReprogrammed(_ change: BARReprogram) {}
}

/// A window on the MMIO bus standing for ECAM.
final class PlainWindow: BusDevice, @unchecked Sendable {
    let name = "pci-ecam-0"
    func read(offset: UInt64, size: Int) -> UInt64 { 0 }
    func write(offset: UInt64, size: Int, value: UInt64) {}
}

/// The VMM's BAR relocation under a guest that moves a BAR onto someone else's window.
@Suite("BAR relocation against a hostile guest")
struct BARMoverHostileTests {
    static let barSize: UInt64 = 0x8_0000

    func move(_ mover: BARMover, _ device: any PCIDevice, from old: UInt64, to new: UInt64) {
        mover.moveBAR(BARReprogram(index: 0, kind: .memory64, oldAddress: old, newAddress: new, size: Self.barSize), of: device)
    }

    func owner(_ mmio: Bus, _ address: UInt64) -> ObjectIdentifier? {
        guard let (device, _) = mmio.resolve(address) else { return nil }
        if let region = device as? PCIBARRegion { return ObjectIdentifier(region.device) }
        return ObjectIdentifier(device)
    }

    @Test("A BAR put over ECAM or another BAR is refused, and moving it away leaves that window mapped")
    func movingAwayFromARefusedAddressKeepsTheOwner() throws {
        let mmio = Bus(name: "MMIO bus")
        let ecam = PlainWindow(), rng = BareFunction(name: "virtio-rng"), console = BareFunction(name: "virtio-console")
        try mmio.insert(ecam, base: 0xE800_0000, length: 0x10_0000)
        try mmio.insert(PCIBARRegion(device: rng, index: 0), base: 0xC000_0000, length: Self.barSize)
        try mmio.insert(PCIBARRegion(device: console, index: 0), base: 0xC008_0000, length: Self.barSize)
        let mover = BARMover(mmio: mmio, vm: InertVM(), events: try EventManager(),
                             logger: Logger(label: "test", factory: { _ in SwiftLogNoOpLogHandler() }))

        move(mover, rng, from: 0xC000_0000, to: 0xE800_0000)
        #expect(owner(mmio, 0xE800_0000) == ObjectIdentifier(ecam), "the overlapping window is refused")
        #expect(owner(mmio, 0xC000_0000) == nil, "the old window is gone")
        move(mover, rng, from: 0xE800_0000, to: 0xD000_0000)
        #expect(owner(mmio, 0xE800_0000) == ObjectIdentifier(ecam), "ECAM survives the BAR leaving the address it never got")
        #expect(owner(mmio, 0xD000_0000) == ObjectIdentifier(rng))

        move(mover, rng, from: 0xD000_0000, to: 0xC008_0000)
        #expect(owner(mmio, 0xC008_0000) == ObjectIdentifier(console))
        move(mover, rng, from: 0xC008_0000, to: 0xC000_0000)
        #expect(owner(mmio, 0xC008_0000) == ObjectIdentifier(console), "the other device's BAR stays mapped")
        #expect(owner(mmio, 0xC000_0000) == ObjectIdentifier(rng))
        #expect(mmio.mappings.count == 3)
    }
}
