import HypervisorTesting

/// The machine code of the hostile guests that `HostileGuestTests` boot, written with
/// ``X86Assembler``. Every guest runs in the PVH entry state (32-bit flat protected mode,
/// paging and interrupts off), sets up its own stack, and reports on COM1 with short
/// markers that the tests look for.
enum HostileGuestPrograms {
    typealias R = X86Assembler.Register32

    // MARK: - Guest memory layout (RAM is 64 MiB; the code is loaded at 1 MiB)

    static let stackTop: UInt32 = 0x0080_0000
    /// Variables: the BAR 0 addresses found by the scan.
    static let rngBARVariable: UInt32 = 0x002F_0000
    static let blockBARVariable: UInt32 = 0x002F_0004
    /// The function table of the PCI hammer: 32-byte entries, ended by a zero address.
    static let functionTable: UInt32 = 0x0030_0000
    /// Rings of the PCI hammer's garbage queues (four queues, 16 KiB each).
    static let scratch: UInt32 = 0x0040_0000
    /// Where garbage descriptors point when they point into RAM (nothing lives there).
    static let victim: UInt32 = 0x0050_0000

    /// Where a correctly configured queue's structures live.
    struct RingLayout {
        var base: UInt32
        var descriptors: UInt32 { base }
        var available: UInt32 { base + 0x1000 }
        var used: UInt32 { base + 0x2000 }
        var buffer: UInt32 { base + 0x3000 }
    }

    static let rngRings = RingLayout(base: 0x0020_0000)
    static let blockRings = RingLayout(base: 0x0021_0000)

    /// virtio device status bits.
    enum Status {
        static let acknowledge: UInt8 = 0x01
        static let driver: UInt8 = 0x02
        static let driverOK: UInt8 = 0x04
        static let featuresOK: UInt8 = 0x08
        static let needsReset: UInt8 = 0x40
    }

    /// Descriptor flags.
    enum DescriptorFlag {
        static let next: UInt16 = 1
        static let write: UInt16 = 2
        static let indirect: UInt16 = 4
    }

    /// Offsets in BAR 0 (`VirtioPCILayout`, `VirtioCommonConfig`).
    enum BAR {
        static let deviceFeatureSelect: Int32 = 0x00
        static let deviceFeature: Int32 = 0x04
        static let driverFeatureSelect: Int32 = 0x08
        static let driverFeature: Int32 = 0x0C
        static let status: Int32 = 0x14
        static let configGeneration: Int32 = 0x15
        static let queueSelect: Int32 = 0x16
        static let queueSize: Int32 = 0x18
        static let queueVector: Int32 = 0x1A
        static let queueEnable: Int32 = 0x1C
        static let queueDescriptor: Int32 = 0x20
        static let queueDriver: Int32 = 0x28
        static let queueDevice: Int32 = 0x30
        static let isr: Int32 = 0x2000
        static let deviceConfig: Int32 = 0x4000
        static let notify: Int32 = 0x6000
        static let msixTable: Int32 = 0x8000
        static let size: UInt32 = 0x8_0000
    }

    static let virtioVendor: UInt32 = 0x1AF4
    static let rngID: UInt32 = 0x1044_1AF4
    static let blockID: UInt32 = 0x1042_1AF4
    static let ecamBase: UInt32 = 0xE800_0000

    // MARK: - a. Random port writes

    /// Writes xorshift32 bytes to every port 0...0xFFFF and reads each back; ports below
    /// 0x1000 (where the legacy devices decode) also get a word and a dword each. Skipped:
    /// the ACPI sleep/reset block 0x600-0x60B and 0xCF9 (reset control on PC chipsets), and
    /// the two byte values that reset through a device the VMM has: 0xFE at 0x64 (i8042
    /// reset pulse, written as 0xFD instead) and CMOS index 0x8F (its bit 7 is cleared,
    /// so index 0x0F follows with NMIs enabled). Then reinitialises the UART, prints
    /// "ALIVE" and powers off.
    static func portHammer(seed: UInt32) throws -> [UInt8] {
        var a = X86Assembler()
        a.mov(.esp, stackTop)
        a.serialPrint("PORTS\n")
        a.mov(.edi, seed)
        a.xor(.edx, .edx)
        let loop = a.here(), next = a.label()
        let notACPI = a.label(), notI8042 = a.label(), notCMOS = a.label(), multiOK = a.label(), multi = a.label()
        a.cmp(.edx, 0x600)
        a.jb(notACPI)
        a.cmp(.edx, 0x60B)
        a.jbe(next)
        a.bind(notACPI)
        a.cmp(.edx, 0xCF9)
        a.je(next)
        a.xorshift32(state: .edi, scratch: .eax)
        a.mov(.eax, .edi)
        a.cmp(.edx, 0x64)
        a.jne(notI8042)
        a.cmp(.al, 0xFE)
        a.jne(notI8042)
        a.mov(.al, 0xFD)
        a.bind(notI8042)
        a.cmp(.edx, 0x70)
        a.jne(notCMOS)
        a.alu(.and, .al, 0x7F)
        a.bind(notCMOS)
        a.outByte()
        a.inByte()
        // Words and dwords below 0x1000, never overlapping a skipped port.
        a.cmp(.edx, 0x1000)
        a.jae(next)
        a.cmp(.edx, 0x5FD)
        a.jb(multiOK)
        a.cmp(.edx, 0x60B)
        a.jbe(next)
        a.bind(multiOK)
        a.cmp(.edx, 0xCF6)
        a.jb(multi)
        a.cmp(.edx, 0xCF9)
        a.jbe(next)
        a.bind(multi)
        a.xorshift32(state: .edi, scratch: .eax)
        a.mov(.eax, .edi)
        a.outWord()
        a.inWord()
        a.xorshift32(state: .edi, scratch: .eax)
        a.mov(.eax, .edi)
        a.outDword()
        a.inDword()
        a.bind(next)
        a.inc(.edx)
        a.cmp(.edx, 0x1_0000)
        a.jb(loop)

        a.serialInit()
        a.serialPrint("\nALIVE\n")
        a.powerOff()
        return try a.assemble()
    }

    // MARK: - PCI configuration helpers

    /// `eax` = the configuration dword at the address in `address` (an 0xCF8 value) plus
    /// `offset`. Clobbers `edx`.
    static func configRead(_ a: inout X86Assembler, address: R, offset: UInt32 = 0) {
        if address != .eax { a.mov(.eax, address) }
        if offset != 0 { a.or(.eax, offset) }
        a.mov(.edx, 0xCF8)
        a.outDword()
        a.mov(.edx, 0xCFC)
        a.inDword()
    }

    /// Writes `value` (a register other than `eax` and `edx`) to the configuration dword
    /// at `address` plus `offset`. Clobbers `eax` and `edx`.
    static func configWrite(_ a: inout X86Assembler, address: R, offset: UInt32, value: R) {
        precondition(value != .eax && value != .edx, "the value register is clobbered by the access")
        a.mov(.eax, address)
        a.or(.eax, offset)
        a.mov(.edx, 0xCF8)
        a.outDword()
        a.mov(.eax, value)
        a.mov(.edx, 0xCFC)
        a.outDword()
    }

    /// Where these 32-bit guests move a 64-bit BAR the VMM placed above 4 GiB (as firmware
    /// reassigns BARs it cannot reach): free space in the 32-bit device window, 512 KiB apart.
    static let lowBARHomes: UInt32 = 0xD100_0000

    /// Finds the bus-0 function whose vendor and device id dword is `id`, moves its BAR 0
    /// below 4 GiB to `home` when the VMM put it above (the VMM places most virtio BARs in
    /// the 64-bit window; these guests reach only the low 4 GiB), enables its memory decoding
    /// and bus mastering, and stores its BAR 0 address at `variable`. Prints "<name>-FOUND",
    /// or "<name>-MISSING" and powers off. Clobbers `eax`, `ebx`, `ecx`, `edx`.
    static func findFunction(_ a: inout X86Assembler, id: UInt32, name: String, storeBARAt variable: UInt32,
                             home: UInt32 = lowBARHomes) {
        let scan = a.label(), found = a.label(), missing = a.label()
        a.mov(.ebx, 0x8000_0000)                 // bus 0, device 0, function 0
        a.bind(scan)
        configRead(&a, address: .ebx)
        a.cmp(.eax, id)
        a.je(found)
        a.add(.ebx, 0x800)                       // next device (function 0 only)
        a.cmp(.ebx, 0x8001_0000)
        a.jb(scan)
        a.jmp(missing)
        a.bind(found)
        configRead(&a, address: .ebx, offset: 0x14)
        let low = a.label()
        a.test(.eax, .eax)
        a.je(low)
        a.mov(.ecx, home)                        // above 4 GiB: the lower half, then the upper one
        configWrite(&a, address: .ebx, offset: 0x10, value: .ecx)
        a.xor(.ecx, .ecx)
        configWrite(&a, address: .ebx, offset: 0x14, value: .ecx)
        a.bind(low)
        configRead(&a, address: .ebx, offset: 0x10)
        a.and(.eax, 0xFFFF_FFF0)
        a.mov(.absolute(variable), .eax)
        a.mov(.ecx, 0x0000_0006)                 // memory space + bus master
        configWrite(&a, address: .ebx, offset: 0x04, value: .ecx)
        a.serialPrint("\(name)-FOUND\n")
        let done = a.label()
        a.jmp(done)
        a.bind(missing)
        a.serialPrint("\(name)-MISSING\n")
        a.powerOff()
        a.bind(done)
    }

    // MARK: - Virtio driver steps

    /// Resets the virtio-pci function whose BAR 0 is in `base` and drives it to DRIVER_OK
    /// with VERSION_1 as the only feature and queue `queue` configured with `size`
    /// entries at `rings` (or a descriptor table at `descriptorTable`). Prints
    /// "<name>-FEATURES-REFUSED" when FEATURES_OK does not stick. Clobbers `eax`, `edx`.
    static func virtioInit(_ a: inout X86Assembler, base: R, name: String, queue: UInt16 = 0, size: UInt16,
                           rings: RingLayout, descriptorTable: UInt64? = nil) {
        a.mov(byte: .at(base, BAR.status), 0)
        a.mov(byte: .at(base, BAR.status), Status.acknowledge)
        a.mov(byte: .at(base, BAR.status), Status.acknowledge | Status.driver)
        a.mov(dword: .at(base, BAR.driverFeatureSelect), 1)
        a.mov(dword: .at(base, BAR.driverFeature), 1)          // VIRTIO_F_VERSION_1 (bit 32)
        a.mov(dword: .at(base, BAR.driverFeatureSelect), 0)
        a.mov(dword: .at(base, BAR.driverFeature), 0)
        a.mov(byte: .at(base, BAR.status), Status.acknowledge | Status.driver | Status.featuresOK)
        let accepted = a.label()
        a.movzx(.eax, byte: .at(base, BAR.status))
        a.test(.al, Status.featuresOK)
        a.jne(accepted)
        a.serialPrint("\(name)-FEATURES-REFUSED\n")
        a.bind(accepted)
        a.mov(word: .at(base, BAR.queueSelect), queue)
        a.mov(word: .at(base, BAR.queueSize), size)
        let table = descriptorTable ?? UInt64(rings.descriptors)
        for (offset, address) in [(BAR.queueDescriptor, table), (BAR.queueDriver, UInt64(rings.available)),
                                  (BAR.queueDevice, UInt64(rings.used))] {
            a.mov(dword: .at(base, offset), UInt32(truncatingIfNeeded: address))
            a.mov(dword: .at(base, offset + 4), UInt32(truncatingIfNeeded: address >> 32))
        }
        a.mov(word: .at(base, BAR.queueEnable), 1)
        a.mov(byte: .at(base, BAR.status), Status.acknowledge | Status.driver | Status.featuresOK | Status.driverOK)
    }

    /// Stores descriptor `index` of the table at `table`.
    static func descriptor(_ a: inout X86Assembler, table: UInt32, index: UInt32, address: UInt64, length: UInt32,
                           flags: UInt16, next: UInt16) {
        let at = table + index * 16
        a.mov(dword: .absolute(at), UInt32(truncatingIfNeeded: address))
        a.mov(dword: .absolute(at + 4), UInt32(truncatingIfNeeded: address >> 32))
        a.mov(dword: .absolute(at + 8), length)
        a.mov(dword: .absolute(at + 12), UInt32(flags) | UInt32(next) << 16)
    }

    /// Clears the rings' indices, then publishes `heads` in the available ring (entries
    /// first, the index last) with `index` as the published index (the count by default).
    static func publish(_ a: inout X86Assembler, rings: RingLayout, heads: [UInt16], index: UInt16? = nil) {
        a.mov(dword: .absolute(rings.used), 0)
        a.mov(dword: .absolute(rings.used + 4), 0xFFFF_FFFF)
        a.mov(dword: .absolute(rings.used + 8), 0xFFFF_FFFF)
        a.mov(dword: .absolute(rings.available), 0)
        for (slot, head) in heads.enumerated() {
            a.mov(word: .absolute(rings.available + 4 + UInt32(slot) * 2), head)
        }
        a.mov(word: .absolute(rings.available + 2), index ?? UInt16(heads.count))
    }

    /// Notifies `queue` with a 16-bit write (as Linux does, so the VMM's ioeventfd takes
    /// it to the event loop), then polls until the device sets DEVICE_NEEDS_RESET or
    /// advances the used index. Prints "<name>-NEEDS-RESET", "<name>-OK" or
    /// "<name>-TIMEOUT" and jumps to `outcome`'s label for it when given. Clobbers `eax`, `ecx`, `edx`.
    static func notifyAndReport(_ a: inout X86Assembler, base: R, name: String, queue: UInt16 = 0, rings: RingLayout,
                                onUsed: X86Assembler.Label? = nil) {
        a.mov(word: .at(base, BAR.notify + Int32(queue) * 4), queue)
        let poll = a.label(), needsReset = a.label(), used = a.label(), done = a.label()
        a.mov(.ecx, 200_000)
        a.bind(poll)
        a.movzx(.eax, byte: .at(base, BAR.status))
        a.test(.al, Status.needsReset)
        a.jne(needsReset)
        a.movzx(.eax, word: .absolute(rings.used + 2))
        a.test(.eax, .eax)
        a.jne(used)
        a.dec(.ecx)
        a.jne(poll)
        a.serialPrint("\(name)-TIMEOUT\n")
        a.jmp(done)
        a.bind(needsReset)
        a.serialPrint("\(name)-NEEDS-RESET\n")
        a.jmp(done)
        a.bind(used)
        a.serialPrint("\(name)-OK\n")
        if let onUsed { a.jmp(onUsed) }
        a.bind(done)
    }

    /// Reports whether the device set DEVICE_NEEDS_RESET without a notification (a
    /// configuration refused at DRIVER_OK): "<name>-NEEDS-RESET" or "<name>-ACCEPTED",
    /// and whether the queue reads as enabled ("<name>-QUEUE-ENABLED"). Clobbers `eax`, `edx`.
    static func reportStatus(_ a: inout X86Assembler, base: R, name: String) {
        let set = a.label(), done = a.label(), disabled = a.label()
        a.movzx(.eax, byte: .at(base, BAR.status))
        a.test(.al, Status.needsReset)
        a.jne(set)
        a.serialPrint("\(name)-ACCEPTED\n")
        a.jmp(done)
        a.bind(set)
        a.serialPrint("\(name)-NEEDS-RESET\n")
        a.bind(done)
        a.movzx(.eax, word: .at(base, BAR.queueEnable))
        a.test(.eax, .eax)
        a.je(disabled)
        a.serialPrint("\(name)-QUEUE-ENABLED\n")
        a.bind(disabled)
    }

    /// A correct request on the virtio-rng at `base`: one 64-byte device-writable buffer
    /// (zeroed first). Prints "RNG-WORKS" when the used ring returned head 0 with 64 bytes
    /// and the buffer is no longer all zeroes, else "RNG-BROKEN" and the used entry.
    /// Clobbers `eax`, `ebx`, `ecx`, `edx`.
    static func rngWorks(_ a: inout X86Assembler, base: R, rings: RingLayout, name: String = "RNG-CHECK") {
        for offset in stride(from: UInt32(0), to: 64, by: 4) { a.mov(dword: .absolute(rings.buffer + offset), 0) }
        descriptor(&a, table: rings.descriptors, index: 0, address: UInt64(rings.buffer), length: 64,
                   flags: DescriptorFlag.write, next: 0)
        publish(&a, rings: rings, heads: [0])
        virtioInit(&a, base: base, name: name, size: 8, rings: rings)
        let used = a.label(), broken = a.label(), done = a.label()
        notifyAndReport(&a, base: base, name: name, rings: rings, onUsed: used)
        a.jmp(broken)
        a.bind(used)
        a.mov(.eax, .absolute(rings.used + 4))     // used.ring[0].id
        a.test(.eax, .eax)
        a.jne(broken)
        a.mov(.eax, .absolute(rings.used + 8))     // used.ring[0].len
        a.cmp(.eax, 64)
        a.jne(broken)
        a.xor(.ebx, .ebx)
        for offset in stride(from: UInt32(0), to: 64, by: 4) {
            a.mov(.eax, .absolute(rings.buffer + offset))
            a.or(.ebx, .eax)
        }
        a.test(.ebx, .ebx)
        a.je(broken)
        a.serialPrint("RNG-WORKS\n")
        a.jmp(done)
        a.bind(broken)
        a.serialPrint("RNG-BROKEN used.idx=")
        a.movzx(.eax, word: .absolute(rings.used + 2))
        a.serialPrintHex(.eax)
        a.serialPrint(" id=")
        a.mov(.eax, .absolute(rings.used + 4))
        a.serialPrintHex(.eax)
        a.serialPrint(" len=")
        a.mov(.eax, .absolute(rings.used + 8))
        a.serialPrintHex(.eax)
        a.serialPrint("\n")
        a.bind(done)
    }

    // MARK: - c. Targeted virtio-rng ring attacks

    /// The guest of the targeted attacks on virtio-rng's request queue (size 8 at
    /// `rngRings`), each after a reset and a fresh initialisation, each reported with
    /// its own marker; then a correct request that must work ("RNG-WORKS").
    static func rngRingAttacks() throws -> [UInt8] {
        var a = X86Assembler()
        a.mov(.esp, stackTop)
        a.serialPrint("ATTACKS\n")
        findFunction(&a, id: rngID, name: "RNG", storeBARAt: rngBARVariable)
        a.mov(.esi, .absolute(rngBARVariable))
        let rings = rngRings
        let buffer = UInt64(rings.buffer)
        let write = DescriptorFlag.write, next = DescriptorFlag.next

        // (1) A chain that loops: 0 -> 1 -> 0.
        descriptor(&a, table: rings.descriptors, index: 0, address: buffer, length: 16, flags: next | write, next: 1)
        descriptor(&a, table: rings.descriptors, index: 1, address: buffer + 16, length: 16, flags: next | write, next: 0)
        publish(&a, rings: rings, heads: [0])
        virtioInit(&a, base: .esi, name: "LOOP", size: 8, rings: rings)
        notifyAndReport(&a, base: .esi, name: "LOOP", rings: rings)

        // (2) A buffer beyond guest RAM (in the 32-bit MMIO hole, below the APIC).
        descriptor(&a, table: rings.descriptors, index: 0, address: 0xFFFF_F000, length: 4096, flags: write, next: 0)
        publish(&a, rings: rings, heads: [0])
        virtioInit(&a, base: .esi, name: "OUTSIDE-RAM", size: 8, rings: rings)
        notifyAndReport(&a, base: .esi, name: "OUTSIDE-RAM", rings: rings)

        // (3) A length of 4 GiB - 1 at a valid address.
        descriptor(&a, table: rings.descriptors, index: 0, address: buffer, length: 0xFFFF_FFFF, flags: write, next: 0)
        publish(&a, rings: rings, heads: [0])
        virtioInit(&a, base: .esi, name: "HUGE-LENGTH", size: 8, rings: rings)
        notifyAndReport(&a, base: .esi, name: "HUGE-LENGTH", rings: rings)

        // (4) Queue sizes that are not a power of two, or above the device's maximum (256):
        // refused when the driver sets DRIVER_OK, before any notification.
        descriptor(&a, table: rings.descriptors, index: 0, address: buffer, length: 64, flags: write, next: 0)
        publish(&a, rings: rings, heads: [0])
        virtioInit(&a, base: .esi, name: "SIZE-3", size: 3, rings: rings)
        reportStatus(&a, base: .esi, name: "SIZE-3")
        notifyAndReport(&a, base: .esi, name: "SIZE-3-NOTIFIED", rings: rings)
        publish(&a, rings: rings, heads: [0])
        virtioInit(&a, base: .esi, name: "SIZE-32768", size: 0x8000, rings: rings)
        reportStatus(&a, base: .esi, name: "SIZE-32768")

        // (5) Extras: a head index beyond the queue, an available index far ahead of the
        // last one seen, a chain without a device-writable buffer, a buffer that is the
        // device's own MMIO registers, and a descriptor table outside RAM.
        publish(&a, rings: rings, heads: [200])
        virtioInit(&a, base: .esi, name: "HEAD-RANGE", size: 8, rings: rings)
        notifyAndReport(&a, base: .esi, name: "HEAD-RANGE", rings: rings)

        publish(&a, rings: rings, heads: [0], index: 100)
        virtioInit(&a, base: .esi, name: "INDEX-JUMP", size: 8, rings: rings)
        notifyAndReport(&a, base: .esi, name: "INDEX-JUMP", rings: rings)

        descriptor(&a, table: rings.descriptors, index: 0, address: buffer, length: 64, flags: 0, next: 0)
        publish(&a, rings: rings, heads: [0])
        virtioInit(&a, base: .esi, name: "READ-ONLY", size: 8, rings: rings)
        notifyAndReport(&a, base: .esi, name: "READ-ONLY", rings: rings)

        // The descriptor address is the BAR's status register: written at run time.
        descriptor(&a, table: rings.descriptors, index: 0, address: 0, length: 64, flags: write, next: 0)
        a.lea(.eax, .at(.esi, BAR.status))
        a.mov(.absolute(rings.descriptors), .eax)
        publish(&a, rings: rings, heads: [0])
        virtioInit(&a, base: .esi, name: "SELF-MMIO", size: 8, rings: rings)
        notifyAndReport(&a, base: .esi, name: "SELF-MMIO", rings: rings)

        publish(&a, rings: rings, heads: [0])
        virtioInit(&a, base: .esi, name: "TABLE-OUTSIDE", size: 8, rings: rings, descriptorTable: 0xFFFF_0000)
        reportStatus(&a, base: .esi, name: "TABLE-OUTSIDE")

        // Finally a correct request: the device recovered from all of it.
        rngWorks(&a, base: .esi, rings: rings)
        a.serialPrint("DONE\n")
        a.powerOff()
        return try a.assemble()
    }

    // MARK: - d. virtio-blk next to virtio-rng

    /// A looping chain on virtio-blk's request queue (left in DEVICE_NEEDS_RESET), a
    /// correct virtio-rng request meanwhile, then virtio-blk reset and a correct read of
    /// sector 0, whose first dword must be `firstDword` ("BLK-WORKS").
    static func blockAttack(firstDword: UInt32) throws -> [UInt8] {
        var a = X86Assembler()
        a.mov(.esp, stackTop)
        a.serialPrint("BLOCK\n")
        findFunction(&a, id: rngID, name: "RNG", storeBARAt: rngBARVariable)
        findFunction(&a, id: blockID, name: "BLK", storeBARAt: blockBARVariable)
        let rings = blockRings
        let buffer = UInt64(rings.buffer)
        let write = DescriptorFlag.write, next = DescriptorFlag.next

        a.mov(.esi, .absolute(blockBARVariable))
        descriptor(&a, table: rings.descriptors, index: 0, address: buffer, length: 16, flags: next, next: 1)
        descriptor(&a, table: rings.descriptors, index: 1, address: buffer + 512, length: 512, flags: next | write, next: 2)
        descriptor(&a, table: rings.descriptors, index: 2, address: buffer + 1024, length: 1, flags: next | write, next: 0)
        publish(&a, rings: rings, heads: [0])
        virtioInit(&a, base: .esi, name: "BLK-LOOP", size: 8, rings: rings)
        notifyAndReport(&a, base: .esi, name: "BLK-LOOP", rings: rings)

        a.mov(.esi, .absolute(rngBARVariable))
        rngWorks(&a, base: .esi, rings: rngRings)

        // A read of sector 0: header (type 0 = IN, sector 0), 512 data bytes, status byte.
        a.mov(.esi, .absolute(blockBARVariable))
        for offset in stride(from: UInt32(0), to: 16, by: 4) { a.mov(dword: .absolute(rings.buffer + offset), 0) }
        a.mov(dword: .absolute(rings.buffer + 512), 0)
        a.mov(byte: .absolute(rings.buffer + 1024), 0xFF)
        descriptor(&a, table: rings.descriptors, index: 0, address: buffer, length: 16, flags: next, next: 1)
        descriptor(&a, table: rings.descriptors, index: 1, address: buffer + 512, length: 512, flags: next | write, next: 2)
        descriptor(&a, table: rings.descriptors, index: 2, address: buffer + 1024, length: 1, flags: write, next: 0)
        publish(&a, rings: rings, heads: [0])
        virtioInit(&a, base: .esi, name: "BLK-READ", size: 8, rings: rings)
        let used = a.label(), broken = a.label(), done = a.label()
        notifyAndReport(&a, base: .esi, name: "BLK-READ", rings: rings, onUsed: used)
        a.jmp(broken)
        a.bind(used)
        a.movzx(.eax, byte: .absolute(rings.buffer + 1024))
        a.test(.eax, .eax)                        // VIRTIO_BLK_S_OK
        a.jne(broken)
        a.mov(.eax, .absolute(rings.buffer + 512))
        a.cmp(.eax, firstDword)
        a.jne(broken)
        a.serialPrint("BLK-WORKS\n")
        a.jmp(done)
        a.bind(broken)
        a.serialPrint("BLK-BROKEN status=")
        a.movzx(.eax, byte: .absolute(rings.buffer + 1024))
        a.serialPrintHex(.eax)
        a.serialPrint(" data=")
        a.mov(.eax, .absolute(rings.buffer + 512))
        a.serialPrintHex(.eax)
        a.serialPrint("\n")
        a.bind(done)
        a.serialPrint("DONE\n")
        a.powerOff()
        return try a.assemble()
    }
}
