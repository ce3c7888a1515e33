import Foundation
import HostSystem
import Hypervisor
import HypervisorTesting
import Interrupts
import PCI
import Synchronization
import Testing

/// A VM that records routing tables and irqfd registrations.
final class RecordingVM: VirtualMachine, @unchecked Sendable {
    let tables = Mutex<[[InterruptRoute]]>([])
    let irqfds = Mutex<[UInt32: Int32]>([:])
    var memorySlots: [MemorySlot] { [] }
    func setMemorySlot(_ slot: MemorySlot) throws(HypervisorError) {}
    func removeMemorySlot(_ slot: UInt32) throws(HypervisorError) {}
    func createVCPU(id: UInt32) throws(HypervisorError) -> any VirtualCPU { throw .invalidArgument("no vCPUs in this fake") }
    func registerIRQFD(_ eventfd: EventFD, gsi: UInt32, resample: EventFD?) throws(HypervisorError) {
        irqfds.withLock { $0[gsi] = eventfd.rawValue }
    }
    func unregisterIRQFD(_ eventfd: EventFD, gsi: UInt32) throws(HypervisorError) { irqfds.withLock { $0[gsi] = nil } }
    func registerIOEventFD(_ eventfd: EventFD, address: IOEventAddress, length: UInt32, datamatch: UInt64?) throws(HypervisorError) {}
    func unregisterIOEventFD(_ eventfd: EventFD, address: IOEventAddress, length: UInt32, datamatch: UInt64?) throws(HypervisorError) {}
    func setGSIRouting(_ routes: [InterruptRoute]) throws(HypervisorError) { tables.withLock { $0.append(routes) } }
    func setIRQLine(_ irq: UInt32, active: Bool) throws(HypervisorError) {}
    func signalMSI(address: UInt64, data: UInt32) throws(HypervisorError) {}
    func dirtyLog(slot: UInt32) throws(HypervisorError) -> [UInt64] { [] }
    var lastTable: [InterruptRoute] { tables.withLock { $0.last ?? [] } }
}

/// Programs MSI-X table entry `vector` as a guest would (4-byte writes).
func program(_ msix: inout MSIXConfiguration, vector: Int, address: UInt64, data: UInt32, masked: Bool) {
    let base = UInt64(vector * 16)
    msix.writeTable(offset: base, size: 4, value: address & 0xFFFF_FFFF)
    msix.writeTable(offset: base + 4, size: 4, value: address >> 32)
    msix.writeTable(offset: base + 8, size: 4, value: UInt64(data))
    msix.writeTable(offset: base + 12, size: 4, value: masked ? 1 : 0)
}

@Suite("GSI routing")
struct GSIRouterTests {
    @Test("The router installs the legacy routes and adds an MSI route only while unmasked")
    func routes() throws {
        let vm = RecordingVM()
        let router = try GSIRouter(vm: vm)
        #expect(vm.lastTable == InterruptRoute.x86LegacyRoutes())
        let vector = try router.allocate()
        #expect(vector.gsi >= 24, "MSI GSIs come after the 24 IOAPIC pins")
        #expect(vm.irqfds.withLock { $0[vector.gsi] } == vector.event.rawValue)
        let installed = vm.tables.withLock { $0.count }
        try router.setMessage(vector, address: 0xFEE0_1000, data: 0x30, masked: true)
        #expect(vm.tables.withLock { $0.count } == installed, "a masked vector's new message changes no route")
        try router.setMessage(vector, address: 0xFEE0_0000, data: 0x31, masked: false)
        #expect(vm.lastTable.last == .msi(gsi: vector.gsi, address: 0xFEE0_0000, data: 0x31))
        try router.setMessage(vector, address: 0xFEE0_0000, data: 0x31, masked: false)
        #expect(vm.tables.withLock { $0.count } == installed + 1, "an unchanged route is not installed again")
        try router.setMessage(vector, address: 0xFEE0_0000, data: 0x31, masked: true)
        #expect(vm.lastTable == InterruptRoute.x86LegacyRoutes())
        try router.release(vector)
        #expect(vm.irqfds.withLock { $0[vector.gsi] } == nil)
        #expect(throws: InterruptError.self) { try router.release(vector) }
        let again = try router.allocate()
        #expect(again.gsi == vector.gsi, "a released GSI is reused")
    }

    @Test("MSI-X table programming becomes routes; delivery signals the irqfd; masked vectors stay pending")
    func msixRouting() throws {
        let vm = RecordingVM()
        let router = try GSIRouter(vm: vm)
        let routing = try KVMMSIXRouting(router: router, count: 2)
        var msix = try MSIXConfiguration(vectors: 2, routing: routing)
        msix.setMessageControl(0x8000)   // MSI-X enable
        program(&msix, vector: 1, address: 0xFEE0_1000, data: 0x45, masked: false)
        #expect(vm.lastTable.contains(.msi(gsi: routing.vectors[1].gsi, address: 0xFEE0_1000, data: 0x45)))
        #expect(!vm.lastTable.contains { $0.gsi == routing.vectors[0].gsi }, "vector 0 is still masked")

        #expect(msix.trigger(vector: 1) == .delivered)
        #expect(try routing.vectors[1].event.read() == 1)
        #expect(msix.trigger(vector: 0) == .pending)
        #expect(try routing.vectors[0].event.read() == nil, "a masked vector does not fire")
        program(&msix, vector: 0, address: 0xFEE0_0000, data: 0x44, masked: false)
        #expect(try routing.vectors[0].event.read() == 1, "unmasking delivers the pending vector")
        #expect(routing.error == nil)
        routing.release()
        #expect(vm.irqfds.withLock { $0.isEmpty })
    }
}

@Suite("MSI-X into a KVM guest", .enabled(if: (try? KVMHypervisor()) != nil, "skipped: /dev/kvm is not usable here"))
struct MSIXGuestTests {
    @Test("A vector the guest's device fires through MSI-X reaches a halted guest")
    func msixInterruptsGuest() throws {
        let guest = try TinyGuest(hypervisor: KVMHypervisor(), irqchip: true)
        let router = try GSIRouter(vm: guest.vm)
        let routing = try KVMMSIXRouting(router: router, count: 1)
        var msix = try MSIXConfiguration(vectors: 1, routing: routing)
        msix.setMessageControl(0x8000)
        program(&msix, vector: 0, address: 0xFEE0_0000, data: 0x40, masked: false)   // vector 0x40 on APIC 0
        var lapic = try guest.vcpu.lapic()
        lapic.setRegister(at: LAPICState.spuriousVectorRegister, 0x1FF)
        try guest.vcpu.setLAPIC(lapic)
        // Main: sti; hlt; out 0x11,al; hlt. Handler at 0x1100: mov al,0x99; out 0x10,al; iret.
        guest.load([0xFB, 0xF4, 0xE6, 0x11, 0xF4], at: 0x1000)
        guest.load([0xB0, 0x99, 0xE6, 0x10, 0xCF], at: 0x1100)
        guest.store(UInt32(0x0000_1100), at: 0x40 * 4)
        try guest.startRealMode(ip: 0x1000)

        let ports = Mutex<[UInt16]>([])
        let vcpu = guest.vcpu
        let done = try EventFD(nonBlocking: true)
        let thread = try HostThread(name: "msix-vcpu") {
            while ports.withLock({ $0.count }) < 2 {
                guard case .ioOut(let port, _)? = try? vcpu.run() else { break }
                ports.withLock { $0.append(port) }
            }
            try? done.signal()
        }
        usleep(100_000)
        #expect(msix.trigger(vector: 0) == .delivered)
        let deadline = Date().addingTimeInterval(60)
        while Date() < deadline, (try? done.read()) == nil { usleep(1_000) }
        if ports.withLock({ $0.count }) < 2 { vcpu.kicker.kick() }
        thread.join()
        #expect(ports.withLock { $0 } == [0x10, 0x11], "the handler ran, then the code after hlt")
        #expect(routing.error == nil)
    }
}
