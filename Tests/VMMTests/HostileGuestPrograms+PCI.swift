import HypervisorTesting

extension HostileGuestPrograms {
    static let consoleID: UInt32 = 0x1043_1AF4
    static let consoleBARVariable: UInt32 = 0x002F_0008
    /// Where the relocation guest parks BAR 0 of virtio-rng (free space in the 32-bit device window).
    static let parkingAddress: UInt32 = 0xD000_0000
    /// Counters of the BAR hammer: rounds that left the device running, and rounds that
    /// ended in DEVICE_NEEDS_RESET.
    static let liveRounds: UInt32 = 0x002F_0010
    static let resetRounds: UInt32 = 0x002F_0014
    /// Rounds in which the device returned at least one chain in a used ring.
    static let usedRounds: UInt32 = 0x002F_0018

    // MARK: - b. PCI configuration space and BAR hammering

    /// Scans bus 0, then writes xorshift32 dwords to every configuration register of every
    /// bus-0 function through 0xCF8/0xCFC (and random bytes at random addresses), and
    /// through ECAM (the first 256 bytes of every function, the whole 4 KiB of the present
    /// ones, random bytes and words, random dwords anywhere in the ECAM window). Then it
    /// restores each present function's BARs and command register and turns MSI-X off,
    /// fills its rings area with random bytes, and hammers each virtio function's BAR 0:
    /// random dwords past the common configuration, then rounds of half-valid driver
    /// sequences (random feature subsets, queue sizes, garbage descriptors with NEXT,
    /// WRITE and INDIRECT, rings in the garbage or outside RAM, DRIVER_OK, notifications
    /// of 16 and 32 bits, device configuration reads and writes). Garbage never points
    /// at the guest's code: in-RAM addresses stay in `scratch` and `victim`, others have
    /// a non-zero upper half. Each virtio function's rounds are reported as
    /// "VIRTIO-<id> LIVE <n> NEEDS-RESET <n> USED <n>" (hexadecimal counts of rounds that
    /// left it running, that it refused, that returned chains). Finally virtio-rng must
    /// still work ("RNG-WORKS"), then "ALIVE".
    static func pciHammer(seed: UInt32, rounds: UInt32 = 96) throws -> [UInt8] {
        var a = X86Assembler()
        a.mov(.esp, stackTop)
        a.serialPrint("PCI\n")
        a.mov(.edi, seed)
        scanFunctions(&a)
        hammerConfigPorts(&a)
        hammerECAM(&a)
        restoreFunctions(&a)
        hammerBARs(&a, rounds: rounds)
        findFunction(&a, id: rngID, name: "RNG", storeBARAt: rngBARVariable)
        a.mov(.esi, .absolute(rngBARVariable))
        rngWorks(&a, base: .esi, rings: rngRings)
        a.serialPrint("ALIVE\n")
        a.powerOff()
        return try a.assemble()
    }

    /// Fills `functionTable` with one 32-byte entry per present bus-0 function: its 0xCF8
    /// address, id dword, BAR 0, BAR 1 and command/status dword; a zero address ends it.
    /// A BAR 0 above 4 GiB is first moved below (``lowBARHomes`` onwards, 512 KiB apart), as
    /// firmware would for a guest that reaches only the low 4 GiB. Prints "FUNCTIONS " and
    /// their count. Clobbers `esi` besides the usual registers.
    static func scanFunctions(_ a: inout X86Assembler) {
        a.mov(.ebp, functionTable)
        a.mov(.ebx, 0x8000_0000)
        a.mov(.esi, lowBARHomes)
        let scan = a.here(), absent = a.label()
        configRead(&a, address: .ebx)
        a.mov(.at(.ebp, 4), .eax)
        a.and(.eax, 0xFFFF)
        a.cmp(.eax, 0xFFFF)
        a.je(absent)
        a.mov(.at(.ebp, 0), .ebx)
        let low = a.label()
        configRead(&a, address: .ebx, offset: 0x14)
        a.test(.eax, .eax)
        a.je(low)
        configWrite(&a, address: .ebx, offset: 0x10, value: .esi)
        a.xor(.ecx, .ecx)
        configWrite(&a, address: .ebx, offset: 0x14, value: .ecx)
        a.add(.esi, 0x8_0000)
        a.bind(low)
        for (register, slot) in [(UInt32(0x10), Int32(8)), (0x14, 12), (0x04, 16)] {
            configRead(&a, address: .ebx, offset: register)
            a.mov(.at(.ebp, slot), .eax)
        }
        a.add(.ebp, 32)
        a.bind(absent)
        a.add(.ebx, 0x100)
        a.cmp(.ebx, 0x8001_0000)
        a.jb(scan)
        a.mov(dword: .at(.ebp), 0)
        a.serialPrint("FUNCTIONS ")
        a.mov(.eax, .ebp)
        a.sub(.eax, functionTable)
        a.shr(.eax, 5)
        a.serialPrintHex(.eax)
        a.serialPrint("\n")
    }

    /// Random dwords to all 64 registers of all 256 bus-0 functions through 0xCF8/0xCFC
    /// (each read back), then 2048 random bytes at random bus-0 addresses and byte lanes.
    static func hammerConfigPorts(_ a: inout X86Assembler) {
        a.xor(.ebx, .ebx)                           // function * 64 + register
        let every = a.here()
        a.mov(.eax, .ebx)
        a.shl(.eax, 2)
        a.or(.eax, 0x8000_0000)
        a.mov(.edx, 0xCF8)
        a.outDword()
        a.xorshift32(state: .edi, scratch: .eax)
        a.mov(.eax, .edi)
        a.mov(.edx, 0xCFC)
        a.outDword()
        a.inDword()
        a.inc(.ebx)
        a.cmp(.ebx, 0x4000)
        a.jb(every)

        a.mov(.ebx, 2048)
        let lanes = a.here()
        a.xorshift32(state: .edi, scratch: .eax)
        a.mov(.eax, .edi)
        a.and(.eax, 0xFFFF)                         // bus 0, any function and register, any low bits
        a.or(.eax, 0x8000_0000)
        a.mov(.edx, 0xCF8)
        a.outDword()
        a.xorshift32(state: .edi, scratch: .eax)
        a.mov(.edx, .edi)
        a.shr(.edx, 30)
        a.add(.edx, 0xCFC)                          // one of 0xCFC...0xCFF
        a.mov(.eax, .edi)
        a.outByte()
        a.inByte()
        a.dec(.ebx)
        a.jne(lanes)
        a.serialPrint("CF8-DONE\n")
    }

    /// Random dwords through ECAM: the first 256 bytes of every bus-0 function, then the
    /// extended space and random bytes and words of each present function, then random
    /// dwords anywhere in the 256 MiB window (only bus 0 is decoded).
    static func hammerECAM(_ a: inout X86Assembler) {
        a.xor(.ebx, .ebx)                           // function * 64 + register
        let every = a.here()
        a.mov(.ecx, .ebx)
        a.and(.ecx, 63)
        a.shl(.ecx, 2)
        a.mov(.eax, .ebx)
        a.shr(.eax, 6)
        a.shl(.eax, 12)
        a.or(.eax, .ecx)
        a.add(.eax, ecamBase)
        a.xorshift32(state: .edi, scratch: .ecx)
        a.mov(.at(.eax), .edi)
        a.mov(.ecx, .at(.eax))
        a.inc(.ebx)
        a.cmp(.ebx, 0x4000)
        a.jb(every)

        a.mov(.ebp, functionTable)
        let function = a.here(), end = a.label()
        a.mov(.eax, .at(.ebp))
        a.test(.eax, .eax)
        a.je(end)
        a.and(.eax, 0xFF00)                         // device and function
        a.shl(.eax, 4)
        a.add(.eax, ecamBase)
        a.mov(.esi, .eax)
        a.mov(.ebx, 0x100)
        let extended = a.here()
        a.xorshift32(state: .edi, scratch: .eax)
        a.mov(.eax, .esi)
        a.add(.eax, .ebx)
        a.mov(.at(.eax), .edi)
        a.mov(.ecx, .at(.eax))
        a.add(.ebx, 4)
        a.cmp(.ebx, 0x1000)
        a.jb(extended)
        a.mov(.ebx, 1024)
        let narrow = a.here()
        a.xorshift32(state: .edi, scratch: .eax)
        a.mov(.eax, .edi)
        a.and(.eax, 0xFFF)
        a.add(.eax, .esi)
        a.xorshift32(state: .edi, scratch: .ecx)
        a.mov(.ecx, .edi)
        a.mov(.at(.eax), .cl)
        a.and(.eax, 0xFFFF_FFFE)
        a.mov(.at(.eax), .cx)
        a.dec(.ebx)
        a.jne(narrow)
        a.add(.ebp, 32)
        a.jmp(function)
        a.bind(end)

        a.mov(.ebx, 1024)
        let wide = a.here()
        a.xorshift32(state: .edi, scratch: .eax)
        a.mov(.eax, .edi)
        a.and(.eax, 0x0FFF_FFFC)
        a.add(.eax, ecamBase)
        a.xorshift32(state: .edi, scratch: .ecx)
        a.mov(.at(.eax), .edi)
        a.dec(.ebx)
        a.jne(wide)
        a.serialPrint("ECAM-DONE\n")
    }

    /// Writes back each present function's BAR 0, BAR 1 and command register as scanned,
    /// and sets MSI-X message control (found by walking the capability list, at most 48
    /// links) to enabled and unmasked, so that the BAR hammer's interrupts reach KVM.
    static func restoreFunctions(_ a: inout X86Assembler) {
        a.mov(.ebp, functionTable)
        let function = a.here(), end = a.label()
        a.mov(.ebx, .at(.ebp))
        a.test(.ebx, .ebx)
        a.je(end)
        for (slot, register) in [(Int32(8), UInt32(0x10)), (12, 0x14), (16, 0x04)] {
            a.mov(.ecx, .at(.ebp, slot))
            configWrite(&a, address: .ebx, offset: register, value: .ecx)
        }
        configRead(&a, address: .ebx, offset: 0x34)
        a.and(.eax, 0xFC)
        a.mov(.esi, .eax)
        a.mov(.ecx, 48)
        let capability = a.here(), done = a.label(), notMSIX = a.label()
        a.test(.esi, .esi)
        a.je(done)
        a.dec(.ecx)
        a.je(done)
        a.mov(.eax, .ebx)
        a.or(.eax, .esi)
        configRead(&a, address: .eax)
        a.push(.eax)
        a.cmp(.al, 0x11)                            // MSI-X
        a.jne(notMSIX)
        a.mov(.eax, .ebx)
        a.or(.eax, .esi)
        a.mov(.edx, 0xCF8)
        a.outDword()
        a.mov(.edx, 0xCFE)
        a.mov(.eax, 0x8000)                         // MSI-X enable, function not masked
        a.outWord()
        a.bind(notMSIX)
        a.pop(.eax)
        a.movzx(.esi, .ah)
        a.and(.esi, 0xFC)
        a.jmp(capability)
        a.bind(done)
        a.add(.ebp, 32)
        a.jmp(function)
        a.bind(end)
        a.serialPrint("RESTORED\n")
    }

    /// Hammers BAR 0 of every virtio function in the table (see ``pciHammer(seed:rounds:)``).
    static func hammerBARs(_ a: inout X86Assembler, rounds: UInt32) {
        a.mov(.ebx, scratch)
        let fill = a.here()
        a.xorshift32(state: .edi, scratch: .eax)
        a.mov(.at(.ebx), .edi)
        a.add(.ebx, 4)
        a.cmp(.ebx, scratch + 0x1_0000)
        a.jb(fill)

        a.mov(.ebp, functionTable)
        let function = a.here(), end = a.label(), next = a.label()
        a.mov(.eax, .at(.ebp))
        a.test(.eax, .eax)
        a.je(end)
        a.mov(.eax, .at(.ebp, 4))
        a.and(.eax, 0xFFFF)
        a.cmp(.eax, virtioVendor)
        a.jne(next)
        a.mov(.eax, .at(.ebp, 12))
        a.test(.eax, .eax)
        a.jne(next)
        a.mov(.esi, .at(.ebp, 8))
        a.and(.esi, 0xFFFF_FFF0)

        // Random dwords anywhere past the common configuration (ISR, device configuration,
        // notifications, MSI-X table and PBA, holes).
        a.mov(.ebx, 1024)
        let random = a.here()
        a.xorshift32(state: .edi, scratch: .eax)
        a.mov(.eax, .edi)
        a.and(.eax, 0x7_DFFC)
        a.add(.eax, UInt32(BAR.isr))
        a.add(.eax, .esi)
        a.xorshift32(state: .edi, scratch: .ecx)
        a.mov(.at(.eax), .edi)
        a.mov(.ecx, .at(.eax))
        a.dec(.ebx)
        a.jne(random)

        a.mov(dword: .absolute(liveRounds), 0)
        a.mov(dword: .absolute(resetRounds), 0)
        a.mov(dword: .absolute(usedRounds), 0)
        a.mov(.ebx, rounds)
        let round = a.here()
        garbageRound(&a)
        countOutcome(&a)
        a.dec(.ebx)
        a.jne(round)
        a.mov(byte: .at(.esi, BAR.status), 0)
        a.serialPrint("VIRTIO-")
        a.mov(.eax, .at(.ebp, 4))
        a.serialPrintHex(.eax)
        a.serialPrint(" LIVE ")
        a.mov(.eax, .absolute(liveRounds))
        a.serialPrintHex(.eax)
        a.serialPrint(" NEEDS-RESET ")
        a.mov(.eax, .absolute(resetRounds))
        a.serialPrintHex(.eax)
        a.serialPrint(" USED ")
        a.mov(.eax, .absolute(usedRounds))
        a.serialPrintHex(.eax)
        a.serialPrint("\n")
        a.bind(next)
        a.add(.ebp, 32)
        a.jmp(function)
        a.bind(end)
        a.serialPrint("BARS-DONE\n")
    }

    /// Counts the round in `liveRounds` when the device runs (status exactly ACKNOWLEDGE,
    /// DRIVER, FEATURES_OK and DRIVER_OK) or in `resetRounds` when it set DEVICE_NEEDS_RESET,
    /// and in `usedRounds` when a used index moved (the rounds zero them before DRIVER_OK).
    ///
    /// The device works on its event loop, not on this vCPU: before counting, the guest waits
    /// until a used index moved or the device asked for a reset, for at most
    /// `outcomeWaitExits` reads of the i8042 status port (each one an exit that lets the
    /// host's threads run), so that the counts do not depend on how fast the host is.
    static func countOutcome(_ a: inout X86Assembler) {
        let needsReset = a.label(), counted = a.label(), unused = a.label()
        let wait = a.label(), acted = a.label()
        a.mov(.ecx, outcomeWaitExits)
        a.bind(wait)
        usedIndexes(&a)
        a.test(.eax, 0xFFFF_0000)
        a.jne(acted)
        a.movzx(.eax, byte: .at(.esi, BAR.status))
        a.test(.al, Status.needsReset)
        a.jne(acted)
        a.inByte(port: 0x64)
        a.dec(.ecx)
        a.jne(wait)
        a.bind(acted)
        usedIndexes(&a)
        a.test(.eax, 0xFFFF_0000)
        a.je(unused)
        a.alu(.add, dword: .absolute(usedRounds), 1)
        a.bind(unused)
        a.movzx(.eax, byte: .at(.esi, BAR.status))
        a.test(.al, Status.needsReset)
        a.jne(needsReset)
        a.cmp(.eax, UInt32(Status.acknowledge | Status.driver | Status.featuresOK | Status.driverOK))
        a.jne(counted)
        a.alu(.add, dword: .absolute(liveRounds), 1)
        a.jmp(counted)
        a.bind(needsReset)
        a.alu(.add, dword: .absolute(resetRounds), 1)
        a.bind(counted)
    }

    /// How many port reads ``countOutcome(_:)`` waits at most for the device to act on a round.
    static let outcomeWaitExits: UInt32 = 2000

    /// ORs the used flags and index dwords of the four rings into `eax` (`edx` clobbered).
    static func usedIndexes(_ a: inout X86Assembler) {
        a.xor(.eax, .eax)
        for queue in UInt32(0)..<4 {
            a.mov(.edx, .absolute(scratch + queue * 0x4000 + 0x2000))
            a.or(.eax, .edx)
        }
    }

    /// One half-valid driver sequence on the virtio function at `esi` (random state in
    /// `edi`; `ebx` and `ebp` preserved).
    static func garbageRound(_ a: inout X86Assembler) {
        let keep = a.label()
        a.xorshift32(state: .edi, scratch: .eax)
        a.test(.edi, 7)
        a.je(keep)
        a.mov(byte: .at(.esi, BAR.status), 0)           // a reset, except one round in eight
        a.bind(keep)
        a.mov(byte: .at(.esi, BAR.status), Status.acknowledge | Status.driver)
        // A random subset of the offered features, always with VERSION_1.
        for half in [UInt32(1), 0] {
            a.mov(dword: .at(.esi, BAR.deviceFeatureSelect), half)
            a.mov(.eax, .at(.esi, BAR.deviceFeature))
            a.xorshift32(state: .edi, scratch: .ecx)
            a.and(.eax, .edi)
            if half == 1 { a.or(.eax, 1) }
            a.mov(dword: .at(.esi, BAR.driverFeatureSelect), half)
            a.mov(.at(.esi, BAR.driverFeature), .eax)
        }
        a.mov(byte: .at(.esi, BAR.status), Status.acknowledge | Status.driver | Status.featuresOK)
        // MSI-X table entries 0-3 with random addresses (the upper half zero three times in
        // four) and random masks; the data is a fixed-delivery, edge-triggered vector of at
        // least 0x20, so that nothing reaches this vCPU but interrupts it keeps pending
        // (interrupts are off): an INIT, NMI or SMI would end the guest, not test the VMM.
        let lowAddress = a.label()
        a.xorshift32(state: .edi, scratch: .eax)
        a.mov(.eax, .edi)
        a.and(.eax, 0x30)
        a.add(.eax, .esi)
        a.xorshift32(state: .edi, scratch: .ecx)
        a.mov(.at(.eax, BAR.msixTable), .edi)
        a.xorshift32(state: .edi, scratch: .ecx)
        a.mov(.ecx, .edi)
        a.test(.edi, 0x300)
        a.jne(lowAddress)
        a.xor(.ecx, .ecx)
        a.bind(lowAddress)
        a.mov(.at(.eax, BAR.msixTable + 4), .ecx)
        a.xorshift32(state: .edi, scratch: .ecx)
        a.mov(.ecx, .edi)
        a.and(.ecx, 0xFF)
        a.or(.ecx, 0x20)
        a.mov(.at(.eax, BAR.msixTable + 8), .ecx)
        a.xorshift32(state: .edi, scratch: .ecx)
        a.mov(.ecx, .edi)
        a.and(.ecx, 1)
        a.mov(.at(.eax, BAR.msixTable + 12), .ecx)
        randomVector(&a, at: 0x10)                       // msix_config
        for queue in UInt32(0)..<4 {
            let ring = scratch + queue * 0x4000
            a.mov(word: .at(.esi, BAR.queueSelect), UInt16(queue))
            // A power of two up to 128 seven times in eight, else any 16-bit value.
            let sized = a.label()
            a.xorshift32(state: .edi, scratch: .eax)
            a.mov(.ecx, .edi)
            a.and(.ecx, 7)
            a.mov(.eax, 1)
            a.shiftByCL(.shl, .eax)
            a.test(.edi, 0x700)
            a.jne(sized)
            a.mov(.eax, .edi)
            a.shr(.eax, 16)
            a.bind(sized)
            a.mov(.at(.esi, BAR.queueSize), .ax)
            garbageDescriptors(&a, table: ring)
            a.xorshift32(state: .edi, scratch: .eax)
            a.mov(.eax, .edi)
            a.and(.eax, 0x0003_0001)                     // flags: maybe NO_INTERRUPT; idx 0...3
            a.mov(.absolute(ring + 0x1000), .eax)
            for pair in UInt32(0)..<4 {
                a.xorshift32(state: .edi, scratch: .eax)
                a.mov(.eax, .edi)
                a.and(.eax, 0x000F_000F)                 // heads 0...15
                a.mov(.absolute(ring + 0x1004 + pair * 4), .eax)
            }
            // The descriptor table in the garbage, or one time in sixteen above 4 GiB.
            let inRAM = a.label(), placed = a.label()
            a.xorshift32(state: .edi, scratch: .eax)
            a.test(.edi, 15)
            a.jne(inRAM)
            a.mov(.at(.esi, BAR.queueDescriptor), .edi)
            a.mov(.eax, .edi)
            a.or(.eax, 1)
            a.mov(.at(.esi, BAR.queueDescriptor + 4), .eax)
            a.jmp(placed)
            a.bind(inRAM)
            a.mov(dword: .at(.esi, BAR.queueDescriptor), ring)
            a.mov(dword: .at(.esi, BAR.queueDescriptor + 4), 0)
            a.bind(placed)
            a.mov(dword: .at(.esi, BAR.queueDriver), ring + 0x1000)
            a.mov(dword: .at(.esi, BAR.queueDriver + 4), 0)
            a.mov(dword: .absolute(ring + 0x2000), 0)      // used flags and index
            a.mov(dword: .at(.esi, BAR.queueDevice), ring + 0x2000)
            a.mov(dword: .at(.esi, BAR.queueDevice + 4), 0)
            randomVector(&a, at: BAR.queueVector)
            let disabled = a.label()
            a.test(.edi, 0x7_0000)                          // enabled seven times in eight
            a.je(disabled)
            a.mov(word: .at(.esi, BAR.queueEnable), 1)
            a.bind(disabled)
        }
        a.mov(byte: .at(.esi, BAR.status), Status.acknowledge | Status.driver | Status.featuresOK | Status.driverOK)
        // Notifications of the queues the device has, as Linux makes them (16-bit: the
        // ioeventfd) and 32-bit (an exit, handled before the next instruction); one round
        // in eight also the queue after the last.
        a.movzx(.ecx, word: .at(.esi, 0x12))              // num_queues
        let beyond = a.label()
        a.xorshift32(state: .edi, scratch: .eax)
        a.test(.edi, 7)
        a.jne(beyond)
        a.inc(.ecx)
        a.bind(beyond)
        for queue in Int32(0)..<4 {
            let absent = a.label()
            a.cmp(.ecx, UInt32(queue))
            a.jbe(absent)
            a.mov(word: .at(.esi, BAR.notify + queue * 4), UInt16(queue))
            a.mov(dword: .at(.esi, BAR.notify + queue * 4), UInt32(queue))
            a.bind(absent)
        }
        // What a driver reads back, and a random device-configuration read and write.
        a.movzx(.eax, byte: .at(.esi, BAR.isr))
        a.movzx(.eax, byte: .at(.esi, BAR.status))
        a.movzx(.eax, byte: .at(.esi, BAR.configGeneration))
        a.xorshift32(state: .edi, scratch: .eax)
        a.mov(.eax, .edi)
        a.and(.eax, 0xFFC)
        a.add(.eax, .esi)
        a.mov(.ecx, .at(.eax, BAR.deviceConfig))
        a.xorshift32(state: .edi, scratch: .ecx)
        a.mov(.at(.eax, BAR.deviceConfig), .edi)
    }

    /// Writes an MSI-X vector number to the 16-bit common configuration field at `offset`:
    /// 0...3 one time in two (valid for every device here but the last), else any value.
    static func randomVector(_ a: inout X86Assembler, at offset: Int32) {
        let any = a.label()
        a.xorshift32(state: .edi, scratch: .eax)
        a.mov(.eax, .edi)
        a.test(.edi, 0x1_0000)
        a.jne(any)
        a.and(.eax, 3)
        a.bind(any)
        a.mov(.at(.esi, offset), .ax)
    }

    /// Sixteen descriptors of structured garbage at `table`: addresses in `victim` three
    /// times in four (else random with a non-zero upper half), lengths below 8 KiB, WRITE
    /// one time in two, NEXT one in four, INDIRECT one in eight, next 0...15.
    static func garbageDescriptors(_ a: inout X86Assembler, table: UInt32) {
        a.mov(.ecx, table)
        let descriptor = a.here(), wild = a.label(), addressed = a.label()
        a.xorshift32(state: .edi, scratch: .eax)
        a.test(.edi, 3)
        a.je(wild)
        a.mov(.eax, .edi)
        a.and(.eax, 0xFFF0)
        a.add(.eax, victim)
        a.mov(.at(.ecx), .eax)
        a.mov(dword: .at(.ecx, 4), 0)
        a.jmp(addressed)
        a.bind(wild)
        a.mov(.at(.ecx), .edi)
        a.mov(.eax, .edi)
        a.or(.eax, 1)
        a.mov(.at(.ecx, 4), .eax)
        a.bind(addressed)
        a.xorshift32(state: .edi, scratch: .eax)
        a.mov(.eax, .edi)
        a.and(.eax, 0x1FFF)
        a.mov(.at(.ecx, 8), .eax)
        a.xorshift32(state: .edi, scratch: .eax)
        a.mov(.eax, .edi)
        a.and(.eax, 0x000F_0002)                         // next, WRITE
        let noNext = a.label(), noIndirect = a.label()
        a.mov(.edx, .edi)
        a.and(.edx, 0x30)
        a.cmp(.edx, 0x30)
        a.jne(noNext)
        a.or(.eax, UInt32(DescriptorFlag.next))
        a.bind(noNext)
        a.mov(.edx, .edi)
        a.and(.edx, 0x1C0)
        a.cmp(.edx, 0x1C0)
        a.jne(noIndirect)
        a.or(.eax, UInt32(DescriptorFlag.indirect))
        a.bind(noIndirect)
        a.mov(.at(.ecx, 12), .eax)
        a.add(.ecx, 16)
        a.cmp(.ecx, table + 16 * 16)
        a.jb(descriptor)
    }

    // MARK: - b2. A BAR moved onto another window and away

    /// Moves virtio-rng's BAR 0 onto the ECAM window's base and then away, and onto
    /// virtio-console's BAR 0 and then away (the VMM refuses the overlapping mappings),
    /// then checks that ECAM and virtio-console's registers still answer ("ECAM-INTACT",
    /// "CONSOLE-INTACT") and that virtio-rng works at the address it was last moved to
    /// ("RNG-WORKS").
    static func barRelocation() throws -> [UInt8] {
        var a = X86Assembler()
        a.mov(.esp, stackTop)
        a.serialPrint("RELOCATION\n")
        findFunction(&a, id: consoleID, name: "CONSOLE", storeBARAt: consoleBARVariable)
        findFunction(&a, id: rngID, name: "RNG", storeBARAt: rngBARVariable, home: lowBARHomes + 0x8_0000)   // leaves its 0xCF8 address in ebx

        func moveRNG(_ a: inout X86Assembler, to address: X86Assembler.Memory?, or immediate: UInt32 = 0) {
            if let address { a.mov(.ecx, address) } else { a.mov(.ecx, immediate) }
            configWrite(&a, address: .ebx, offset: 0x10, value: .ecx)
            a.xor(.ecx, .ecx)
            configWrite(&a, address: .ebx, offset: 0x14, value: .ecx)   // a 64-bit BAR moves on its upper half
        }
        moveRNG(&a, to: nil, or: ecamBase)
        moveRNG(&a, to: nil, or: parkingAddress)
        // ECAM still decodes: function 00.0's id through ECAM equals the one through 0xCF8.
        let ecamLost = a.label(), ecamChecked = a.label()
        a.mov(.ecx, 0x8000_0000)
        configRead(&a, address: .ecx)
        a.mov(.ecx, .eax)
        a.mov(.eax, .absolute(ecamBase))
        a.cmp(.eax, .ecx)
        a.jne(ecamLost)
        a.serialPrint("ECAM-INTACT\n")
        a.jmp(ecamChecked)
        a.bind(ecamLost)
        a.serialPrint("ECAM-LOST ")
        a.push(.ebx)
        a.serialPrintHex(.eax)
        a.pop(.ebx)
        a.serialPrint("\n")
        a.bind(ecamChecked)

        moveRNG(&a, to: .absolute(consoleBARVariable))
        moveRNG(&a, to: nil, or: parkingAddress)
        // virtio-console's common configuration still answers: num_queues is not all ones.
        let consoleLost = a.label(), consoleChecked = a.label()
        a.mov(.ecx, .absolute(consoleBARVariable))
        a.movzx(.eax, word: .at(.ecx, 0x12))
        a.cmp(.eax, 0xFFFF)
        a.je(consoleLost)
        a.serialPrint("CONSOLE-INTACT\n")
        a.jmp(consoleChecked)
        a.bind(consoleLost)
        a.serialPrint("CONSOLE-LOST\n")
        a.bind(consoleChecked)

        a.mov(.esi, parkingAddress)
        rngWorks(&a, base: .esi, rings: rngRings)
        a.serialPrint("DONE\n")
        a.powerOff()
        return try a.assemble()
    }
}
