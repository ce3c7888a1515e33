import Foundation
import HostSystem
import Hypervisor
import HypervisorTesting
import Synchronization
import Testing

/// Tiny guests on this host's /dev/kvm: real work in the guest, checked through exits and registers.
@Suite("KVM tiny guests", .enabled(if: KVMSupport.available, KVMSupport.reason))
struct KVMGuestTests {
    @Test("A real-mode guest does port I/O in and out")
    func realModePortIO() throws {
        let guest = try TinyGuest(hypervisor: KVMSupport.kvm())
        // mov al,0x42; out 0x10,al; in al,0x11; add al,1; out 0x12,al; mov dx,0x3f8; mov ax,0x1234; out dx,ax; hlt
        guest.load([0xB0, 0x42, 0xE6, 0x10, 0xE4, 0x11, 0x04, 0x01, 0xE6, 0x12,
                    0xBA, 0xF8, 0x03, 0xB8, 0x34, 0x12, 0xEF, 0xF4], at: 0x1000)
        try guest.startRealMode(ip: 0x1000)

        guard case .ioOut(let port1, let data1) = try guest.vcpu.run() else { Issue.record("expected out"); return }
        #expect(port1 == 0x10 && data1.size == 1 && data1.value == 0x42)

        guard case .ioIn(let port2, let data2) = try guest.vcpu.run() else { Issue.record("expected in"); return }
        #expect(port2 == 0x11 && data2.size == 1)
        data2.set(0x7F)

        guard case .ioOut(let port3, let data3) = try guest.vcpu.run() else { Issue.record("expected out"); return }
        #expect(port3 == 0x12 && data3.value == 0x80, "the guest added 1 to the byte the VMM supplied")

        guard case .ioOut(let port4, let data4) = try guest.vcpu.run() else { Issue.record("expected 16-bit out"); return }
        #expect(port4 == 0x3F8 && data4.size == 2 && data4.value == 0x1234)

        guard case .halt = try guest.vcpu.run() else { Issue.record("expected hlt"); return }
    }

    @Test("MMIO writes and reads exit with their address, width and data")
    func mmioExits() throws {
        let guest = try TinyGuest(hypervisor: KVMSupport.kvm())
        // mov ax,0x2000; mov ds,ax; mov word [0x10],0xbeef; mov dword [0x14],0x12345678; mov ax,[0x20]; out 0x10,ax; hlt
        guest.load([0xB8, 0x00, 0x20, 0x8E, 0xD8, 0xC7, 0x06, 0x10, 0x00, 0xEF, 0xBE,
                    0x66, 0xC7, 0x06, 0x14, 0x00, 0x78, 0x56, 0x34, 0x12,
                    0xA1, 0x20, 0x00, 0xE7, 0x10, 0xF4], at: 0x1000)
        try guest.startRealMode(ip: 0x1000)

        guard case .mmioWrite(let a1, let d1) = try guest.vcpu.run() else { Issue.record("expected MMIO write"); return }
        #expect(a1 == 0x20010 && d1.size == 2 && d1.value == 0xBEEF)
        guard case .mmioWrite(let a2, let d2) = try guest.vcpu.run() else { Issue.record("expected MMIO write"); return }
        #expect(a2 == 0x20014 && d2.size == 4 && d2.value == 0x1234_5678)
        guard case .mmioRead(let a3, let d3) = try guest.vcpu.run() else { Issue.record("expected MMIO read"); return }
        #expect(a3 == 0x20020 && d3.size == 2)
        d3.set(0x5A5B)
        guard case .ioOut(0x10, let d4) = try guest.vcpu.run() else { Issue.record("expected out"); return }
        #expect(d4.size == 2 && d4.value == 0x5A5B, "the guest saw the value the VMM supplied for its MMIO read")
    }

    @Test("A 64-bit guest drops to CPL3 and computes a sum checked through its registers")
    func longModeUserComputation() throws {
        let guest = try TinyGuest(hypervisor: KVMSupport.kvm())
        // xor eax,eax; mov ecx,1000; 1: add rax,rcx; dec ecx; jnz 1b; mov ebx,cs; out 0x10,al; hlt
        try guest.startUserMode([0x31, 0xC0, 0xB9, 0xE8, 0x03, 0x00, 0x00, 0x48, 0x01, 0xC8,
                                 0xFF, 0xC9, 0x75, 0xF9, 0x8C, 0xCB, 0xE6, 0x10, 0xF4])
        guard case .ioOut(0x10, _) = try guest.vcpu.run() else { Issue.record("expected the guest's out"); return }
        let regs = try guest.vcpu.registers()
        #expect(regs.rax == 500_500, "sum of 1...1000")
        #expect(regs.rbx & 3 == 3, "the code ran at CPL3 (CS RPL \(regs.rbx & 3))")
        #expect(regs.rcx == 0)
        let sregs = try guest.vcpu.specialRegisters()
        #expect(sregs.cs.selector == TinyGuest.userCodeSelector && sregs.cs.dpl == 3 && sregs.cs.l)
        #expect(sregs.efer & 0x400 != 0, "long mode active")
    }

    @Test("An ioeventfd fires on a guest write without an exit; a data match filters values")
    func ioeventfdWithoutExit() throws {
        let guest = try TinyGuest(hypervisor: KVMSupport.kvm())
        let pio = try EventFD()
        let mmio = try EventFD()
        try guest.vm.registerIOEventFD(pio, address: .pio(0x30), length: 1)
        try guest.vm.registerIOEventFD(mmio, address: .mmio(0x20040), length: 2, datamatch: 7)
        // mov al,1; out 0x30,al; mov ax,0x2000; mov ds,ax; mov word [0x40],7; mov word [0x40],8; out 0x10,al; hlt
        guest.load([0xB0, 0x01, 0xE6, 0x30, 0xB8, 0x00, 0x20, 0x8E, 0xD8,
                    0xC7, 0x06, 0x40, 0x00, 0x07, 0x00, 0xC7, 0x06, 0x40, 0x00, 0x08, 0x00,
                    0xE6, 0x10, 0xF4], at: 0x1000)
        try guest.startRealMode(ip: 0x1000)

        guard case .mmioWrite(let address, let data) = try guest.vcpu.run() else {
            Issue.record("the first exit should be the write the data match did not take"); return
        }
        #expect(address == 0x20040 && data.value == 8)
        guard case .ioOut(0x10, _) = try guest.vcpu.run() else { Issue.record("expected out 0x10"); return }
        #expect(try pio.read() == 1, "the port write signalled the eventfd")
        #expect(try mmio.read() == 1, "the matching MMIO write signalled the eventfd")

        try guest.vm.unregisterIOEventFD(pio, address: .pio(0x30), length: 1)
        #expect(throws: HypervisorError.self) {
            try guest.vm.registerIOEventFD(pio, address: .pio(0x30), length: 3)
        }
    }

    @Test("Writes to a coalesced port wait in the ring and come out in order before the next exit")
    func coalescedPortWrites() throws {
        let guest = try TinyGuest(hypervisor: KVMSupport.kvm())
        guard try guest.vm.registerCoalescedPortIO(port: 0xCF8, length: 4) else {
            Issue.record("this host's KVM has no coalesced port I/O"); return
        }
        // mov dx,0xcf8; mov eax,0x80000010; out dx,eax; mov eax,0x80000814; out dx,eax; inc dx; mov al,7; out dx,al;
        // mov dx,0xcfc; in eax,dx; hlt
        guest.load([0xBA, 0xF8, 0x0C, 0x66, 0xB8, 0x10, 0x00, 0x00, 0x80, 0x66, 0xEF,
                    0x66, 0xB8, 0x14, 0x08, 0x00, 0x80, 0x66, 0xEF, 0x42, 0xB0, 0x07, 0xEE,
                    0xBA, 0xFC, 0x0C, 0x66, 0xED, 0xF4], at: 0x1000)
        try guest.startRealMode(ip: 0x1000)

        guard case .ioIn(let port, let data) = try guest.vcpu.run() else { Issue.record("expected the data port's read to exit first"); return }
        #expect(port == 0xCFC && data.size == 4)
        var writes: [CoalescedWrite] = []
        guest.vcpu.drainCoalescedWrites { writes.append($0) }
        #expect(writes == [
            CoalescedWrite(isPortIO: true, address: 0xCF8, size: 4, value: 0x8000_0010),
            CoalescedWrite(isPortIO: true, address: 0xCF8, size: 4, value: 0x8000_0814),
            CoalescedWrite(isPortIO: true, address: 0xCF9, size: 1, value: 7),
        ])
        var again: [CoalescedWrite] = []
        guest.vcpu.drainCoalescedWrites { again.append($0) }
        #expect(again.isEmpty, "a drained ring is empty")
        data.set(0x1234_5678)
        guard case .halt = try guest.vcpu.run() else { Issue.record("expected hlt"); return }
        #expect(try guest.vcpu.registers().rax & 0xFFFF_FFFF == 0x1234_5678)
    }

    @Test("An irqfd delivers an interrupt that a halted guest observes")
    func irqfdInterruptsGuest() throws {
        let guest = try TinyGuest(hypervisor: KVMSupport.kvm(), irqchip: true)
        // Route GSI 24 to an MSI for vector 0x40 on APIC 0, and software-enable the LAPIC.
        try guest.vm.setGSIRouting(InterruptRoute.x86LegacyRoutes() + [.msi(gsi: 24, address: 0xFEE0_0000, data: 0x40)])
        let irq = try EventFD()
        try guest.vm.registerIRQFD(irq, gsi: 24, resample: nil)
        var lapic = try guest.vcpu.lapic()
        lapic.setRegister(at: LAPICState.spuriousVectorRegister, 0x1FF)
        try guest.vcpu.setLAPIC(lapic)
        // Main: sti; hlt; out 0x11,al; hlt. Handler at 0x1100: mov al,0x99; out 0x10,al; iret.
        guest.load([0xFB, 0xF4, 0xE6, 0x11, 0xF4], at: 0x1000)
        guest.load([0xB0, 0x99, 0xE6, 0x10, 0xCF], at: 0x1100)
        guest.store(UInt32(0x0000_1100), at: 0x40 * 4)   // real-mode IVT entry: 0000:1100
        try guest.startRealMode(ip: 0x1000)

        let ports = Mutex<[UInt16]>([])
        let vcpu = guest.vcpu
        let run = try BackgroundRun {
            while ports.withLock({ $0.count }) < 2 {
                guard case .ioOut(let port, _)? = try? vcpu.run() else { return }
                ports.withLock { $0.append(port) }
            }
        }
        // Give the vCPU time to reach its hlt (it waits in the kernel: no exit), then interrupt it.
        usleep(100_000)
        #expect(ports.withLock { $0 }.isEmpty, "nothing happens before the interrupt")
        try irq.signal()
        #expect(run.wait(seconds: 60, kick: vcpu.kicker), "the guest finished after the interrupt")
        #expect(ports.withLock { $0 } == [0x10, 0x11], "the handler ran (port 0x10), then the code after hlt (0x11)")
    }

    @Test("The dirty log reports exactly the pages the guest wrote")
    func dirtyLog() throws {
        let guest = try TinyGuest(hypervisor: KVMSupport.kvm())
        let logged = try MemoryMapping(anonymous: 0x10000)
        try guest.vm.setMemorySlot(MemorySlot(slot: 1, guestAddress: 0x10000, size: 0x10000, hostAddress: logged.baseAddress, flags: .logDirtyPages))
        // mov ax,0x1000; mov ds,ax; mov byte [0x3000],1; mov word [0x5008],2; mov byte [0x9fff],3; out 0x10,al; hlt
        guest.load([0xB8, 0x00, 0x10, 0x8E, 0xD8, 0xC6, 0x06, 0x00, 0x30, 0x01,
                    0xC7, 0x06, 0x08, 0x50, 0x02, 0x00, 0xC6, 0x06, 0xFF, 0x9F, 0x03,
                    0xE6, 0x10, 0xF4], at: 0x1000)
        try guest.startRealMode(ip: 0x1000)
        guard case .ioOut(0x10, _) = try guest.vcpu.run() else { Issue.record("expected out"); return }

        let bitmap = try guest.vm.dirtyLog(slot: 1)
        #expect(bitmap == [UInt64(1 << 3 | 1 << 5 | 1 << 9)], "pages 3, 5 and 9 of the slot, and no others")
        #expect(logged.bytes[0x3000] == 1 && logged.bytes[0x5008] == 2 && logged.bytes[0x9FFF] == 3)
        #expect(try guest.vm.dirtyLog(slot: 1) == [0], "reading the log resets it")
        #expect(throws: HypervisorError.self) { _ = try guest.vm.dirtyLog(slot: 0) }
    }

    @Test("A vCPU spinning at CPL3 is kicked out of KVM_RUN from another thread")
    func kickSpinningVCPU() throws {
        try KickSignal.install()
        let guest = try TinyGuest(hypervisor: KVMSupport.kvm())
        try guest.startUserMode([0xEB, 0xFE])   // 1: jmp 1b
        let vcpu = guest.vcpu
        let result = Mutex<String>("none")
        let run = try BackgroundRun {
            let exit = try? vcpu.run()
            if case .interrupted? = exit { result.withLock { $0 = "interrupted" } } else { result.withLock { $0 = "\(String(describing: exit))" } }
        }
        usleep(200_000)
        #expect(result.withLock { $0 } == "none", "the guest is still spinning")
        vcpu.kicker.kick()
        #expect(run.wait(seconds: 30), "the kick ended KVM_RUN")
        #expect(result.withLock { $0 } == "interrupted")
        let regs = try vcpu.registers()
        #expect(regs.rip == TinyGuest.userCodeAddress, "the guest was inside its loop")
    }

    @Test("A kick before run makes the next run return at once")
    func kickBeforeRun() throws {
        let guest = try TinyGuest(hypervisor: KVMSupport.kvm())
        try guest.startUserMode([0xEB, 0xFE])
        guest.vcpu.kicker.kick()
        guard case .interrupted = try guest.vcpu.run() else { Issue.record("expected .interrupted"); return }
    }

    @Test("Overlapping memory slots are refused with a clear error")
    func overlappingSlots() throws {
        let guest = try TinyGuest(hypervisor: KVMSupport.kvm())
        let other = try MemoryMapping(anonymous: 0x10000)
        let error = #expect(throws: HypervisorError.self) {
            try guest.vm.setMemorySlot(MemorySlot(slot: 1, guestAddress: 0x8000, size: 0x10000, hostAddress: other.baseAddress))
        }
        #expect(error == .overlappingMemorySlot(slot: 1, guestAddress: 0x8000, size: 0x10000, existingSlot: 0, existingAddress: 0, existingSize: 0x10000))
        #expect(error?.description == "memory slot 1 [0x8000-0x17fff] overlaps memory slot 0 [0x0-0xffff]")
        // Adjacent is fine; misaligned is refused; removal works once.
        try guest.vm.setMemorySlot(MemorySlot(slot: 1, guestAddress: 0x10000, size: 0x10000, hostAddress: other.baseAddress))
        #expect(throws: HypervisorError.self) {
            try guest.vm.setMemorySlot(MemorySlot(slot: 2, guestAddress: 0x20800, size: 0x1000, hostAddress: other.baseAddress))
        }
        try guest.vm.removeMemorySlot(1)
        #expect(throws: HypervisorError.unknownMemorySlot(1)) { try guest.vm.removeMemorySlot(1) }
        #expect(guest.vm.memorySlots.map(\.slot) == [0])
    }
}
