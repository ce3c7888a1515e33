import HostSystem
import Hypervisor

/// A tiny KVM guest for tests and benchmarks: one vCPU, a little RAM at guest address 0,
/// and helpers that start it in real mode or in 64-bit mode (dropping to CPL3 at once, where
/// a nested PVM host runs guest code natively; see HOST.md).
///
/// Long-mode layout (all inside the first 64 KiB): GDT at 0x500, CPL0 stub at 0x1000, user
/// code at 0x2000, CPL0 stack top 0x7000, user stack top 0x8000, PML4/PDPT/PD at
/// 0x9000/0xA000/0xB000 identity-mapping the first 2 MiB as one user-accessible large page.
public final class TinyGuest {
    /// The hypervisor.
    public let hypervisor: KVMHypervisor
    /// The VM.
    public let vm: KVMVirtualMachine
    /// Guest RAM, mapped at guest address 0 as memory slot 0.
    public let memory: MemoryMapping
    /// The single vCPU (id 0).
    public let vcpu: KVMVCPU

    /// Where `startUserMode` places the user code.
    public static let userCodeAddress: UInt64 = 0x2000
    /// The user-mode code selector (GDT entry 3, RPL 3).
    public static let userCodeSelector: UInt16 = 0x1B

    /// Creates the VM with `memorySize` bytes of RAM at 0 and, if asked, the in-kernel
    /// irqchip (which must exist before the vCPU is created). The vCPU gets the host's
    /// supported CPUID.
    public init(hypervisor: KVMHypervisor, memorySize: Int = 0x10000, irqchip: Bool = false) throws {
        self.hypervisor = hypervisor
        vm = try hypervisor.createKVMVirtualMachine()
        if irqchip {
            try vm.setTSSAddress(0xFFFB_D000)
            try vm.createIRQChip()
        }
        memory = try MemoryMapping(anonymous: memorySize)
        try vm.setMemorySlot(MemorySlot(slot: 0, guestAddress: 0, size: UInt64(memorySize), hostAddress: memory.baseAddress))
        vcpu = try vm.createKVMVCPU(id: 0)
        try vcpu.setCPUID(hypervisor.supportedCPUID())
    }

    /// Copies `bytes` into guest RAM at `address`.
    public func load(_ bytes: [UInt8], at address: Int) {
        precondition(address >= 0 && address + bytes.count <= memory.size, "tiny guest load outside its RAM")
        UnsafeMutableRawBufferPointer(rebasing: memory.bytes[address..<(address + bytes.count)]).copyBytes(from: bytes)
    }

    /// Stores a little-endian integer into guest RAM at `address`.
    public func store<T: FixedWidthInteger>(_ value: T, at address: Int) {
        load(withUnsafeBytes(of: value.littleEndian) { Array($0) }, at: address)
    }

    /// Reads guest RAM.
    public func bytes(at address: Int, count: Int) -> [UInt8] {
        Array(memory.bytes[address..<(address + count)])
    }

    /// Starts the vCPU in real mode at `0:ip`, flat segments, interrupts disabled.
    public func startRealMode(ip: UInt16, stack: UInt16 = 0x7000) throws {
        var sregs = try vcpu.specialRegisters()
        for keyPath in [\SpecialRegisters.cs, \.ds, \.es, \.fs, \.gs, \.ss] {
            sregs[keyPath: keyPath].base = 0
            sregs[keyPath: keyPath].selector = 0
        }
        try vcpu.setSpecialRegisters(sregs)
        var regs = StandardRegisters()
        regs.rip = UInt64(ip)
        regs.rsp = UInt64(stack)
        try vcpu.setRegisters(regs)
    }

    /// CPL0 stub: `push 0x23; push 0x8000; push 0x3002; push 0x1b; push 0x2000; iretq`, that is
    /// an interrupt return to the user code at 0x2000 with IOPL 3 (so port I/O works at CPL3).
    public static let dropToUserStub: [UInt8] = [
        0x6A, 0x23, 0x68, 0x00, 0x80, 0x00, 0x00, 0x68, 0x02, 0x30, 0x00, 0x00,
        0x6A, 0x1B, 0x68, 0x00, 0x20, 0x00, 0x00, 0x48, 0xCF,
    ]

    /// Loads `userCode` at 0x2000 and starts the vCPU in 64-bit mode at CPL0 on the stub
    /// that drops to CPL3. `registers` seeds the general registers the user code sees
    /// (`rip`, `rsp` and `rflags` are set here).
    public func startUserMode(_ userCode: [UInt8], registers: StandardRegisters = StandardRegisters()) throws {
        // GDT: null, kernel code64, kernel data, user code64 (DPL3), user data (DPL3).
        let gdt: [UInt64] = [0, 0x00AF_9B00_0000_FFFF, 0x00CF_9300_0000_FFFF, 0x00AF_FB00_0000_FFFF, 0x00CF_F300_0000_FFFF]
        for (i, entry) in gdt.enumerated() { store(entry, at: 0x500 + i * 8) }
        store(UInt64(0xA000 | 0x7), at: 0x9000)      // PML4[0] -> PDPT, present|write|user
        store(UInt64(0xB000 | 0x7), at: 0xA000)      // PDPT[0] -> PD
        store(UInt64(0x0 | 0x87), at: 0xB000)        // PD[0] -> 2 MiB page at 0, present|write|user|large
        load(Self.dropToUserStub, at: 0x1000)
        load(userCode, at: Int(Self.userCodeAddress))

        var sregs = try vcpu.specialRegisters()
        sregs.cs = SegmentRegister(base: 0, limit: 0xFFFF_FFFF, selector: 0x08, type: 0xB, dpl: 0, l: true, g: true)
        let data = SegmentRegister(base: 0, limit: 0xFFFF_FFFF, selector: 0x10, type: 0x3, dpl: 0, db: true, g: true)
        sregs.ds = data; sregs.es = data; sregs.fs = data; sregs.gs = data; sregs.ss = data
        sregs.gdt = DescriptorTable(base: 0x500, limit: UInt16(gdt.count * 8 - 1))
        sregs.cr3 = 0x9000
        sregs.cr4 = 0x20                // PAE
        sregs.cr0 = 0x8000_0033         // PG | NE | ET | MP | PE
        sregs.efer = 0x500              // LMA | LME
        try vcpu.setSpecialRegisters(sregs)

        var regs = registers
        regs.rip = 0x1000
        regs.rsp = 0x7000
        regs.rflags = 0x2
        try vcpu.setRegisters(regs)
    }
}
