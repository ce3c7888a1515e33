extension PlatformAML {
    /// The size of the memory hotplug controller's register block.
    public static let memoryHotplugRegisterSize: UInt64 = 0x18
    /// How many memory devices (hotplug slots) Cloud Hypervisor describes.
    public static let memoryHotplugSlots = 8

    /// The name of memory device `index`: `M` and three decimal digits, as Cloud Hypervisor
    /// formats it.
    static func memoryDeviceName(_ index: Int) throws(ACPIError) -> AML.NameString {
        let digits = String(index)
        return try AML.NameString("M" + String(repeating: "0", count: max(0, 3 - digits.count)) + digits)
    }

    /// Cloud Hypervisor's memory hotplug controller with ACPI hotplug, `\_SB_.MHPC`: its
    /// register block at `address`, the methods the Generic Event Device's memory cause and
    /// the memory devices call, and one memory device (`PNP0C80`) per hotplug slot.
    ///
    /// ```text
    /// Device (\_SB_.MHPC) {
    ///     Name (_HID, EisaId ("PNP0A06"))
    ///     Name (_UID, "Memory Hotplug Controller")
    ///     Mutex (MLCK, 0x00)
    ///     Name (_CRS, ResourceTemplate () { QWordMemory (..., address, address + 0x17, ..., 0x18) })
    ///     OperationRegion (MHPR, SystemMemory, address, 0x18)
    ///     Field (MHPR, DWordAcc, NoLock, Preserve) { MHBL, 32, MHBH, 32, MHLL, 32, MHLH, 32 }
    ///     Field (MHPR, DWordAcc, NoLock, Preserve) { Offset (0x10), MHPX, 32 }
    ///     Field (MHPR, ByteAcc, NoLock, WriteAsZeros) { Offset (0x14), MEN_, 1, MINS, 1, MRMV, 1, MEJ0, 1 }
    ///     Field (MHPR, DWordAcc, NoLock, Preserve) { MSEL, 32, MOEV, 32, MOSC, 32 }
    ///     Method (MTFY, 2, Serialized) { If (LEqual (Arg0, Zero)) { Notify (M000, Arg1) } ... }
    ///     Method (MSCN, 0, Serialized) {       // notify inserted (1) and removing (3) slots, acknowledge each
    ///         Acquire (MLCK, 0xFFFF)
    ///         Store (Zero, Local0)
    ///         While (LLess (Local0, 0x08)) {
    ///             Store (Local0, \_SB_.MHPC.MSEL)
    ///             If (LEqual (\_SB_.MHPC.MINS, One)) { MTFY (Local0, One)  Store (One, \_SB_.MHPC.MINS) }
    ///             If (LEqual (\_SB_.MHPC.MRMV, One)) { MTFY (Local0, 0x03)  Store (One, \_SB_.MHPC.MRMV) }
    ///             Add (Local0, One, Local0)
    ///         }
    ///         Release (MLCK)
    ///     }
    ///     Method (MSTA, 1, Serialized) { ... }  // 0x0F when slot Arg0 is enabled, else 0
    ///     Method (MCRS, 1, Serialized) { ... }  // a QWordMemory template filled with slot Arg0's base and length
    ///     Device (M000) {
    ///         Name (_HID, EisaId ("PNP0C80"))
    ///         Name (_UID, Zero)
    ///         Method (_STA, 0, NotSerialized) { Return (MSTA (Zero)) }
    ///         Method (_CRS, 0, NotSerialized) { Return (MCRS (Zero)) }
    ///     }
    ///     ...
    /// }
    /// ```
    public static func memoryHotplugController(address: UInt64, slots: Int = memoryHotplugSlots) throws(ACPIError) -> AML.Device {
        let lock: AML.NameString = "MLCK"
        let select: AML.NameString = "\\_SB_.MHPC.MSEL"
        var notifies: [any AMLConvertible] = []
        for index in 0..<slots {
            notifies.append(AML.If(AML.equal(AML.Arg(0), UInt32(index)), then: [AML.Notify(try memoryDeviceName(index), AML.Arg(1))]))
        }
        let scan = AML.Method("MSCN", serialized: true) {
            AML.Acquire(lock, timeout: 0xffff)
            AML.Store(AML.zero, into: AML.Local(0))
            AML.While(AML.less(AML.Local(0), UInt32(slots)), [
                AML.Store(AML.Local(0), into: select),
                AML.If(AML.equal(AML.NameString("\\_SB_.MHPC.MINS"), AML.one), then: [
                    AML.MethodCall("MTFY", [AML.Local(0), AML.one]),
                    AML.Store(AML.one, into: AML.NameString("\\_SB_.MHPC.MINS")),
                ]),
                AML.If(AML.equal(AML.NameString("\\_SB_.MHPC.MRMV"), AML.one), then: [
                    AML.MethodCall("MTFY", [AML.Local(0), UInt8(3)]),
                    AML.Store(AML.one, into: AML.NameString("\\_SB_.MHPC.MRMV")),
                ]),
                AML.add(AML.Local(0), AML.one, into: AML.Local(0)),
            ])
            AML.Release(lock)
        }
        let status = AML.Method("MSTA", arguments: 1, serialized: true) {
            AML.Acquire(lock, timeout: 0xffff)
            AML.Store(AML.Arg(0), into: select)
            AML.Store(AML.zero, into: AML.Local(0))
            AML.If(AML.equal(AML.NameString("\\_SB_.MHPC.MEN_"), AML.one), then: [AML.Store(UInt8(0x0f), into: AML.Local(0))])
            AML.Release(lock)
            AML.Return(AML.Local(0))
        }
        // The template's QWordMemory fields: minimum at byte 14, maximum at 22, length at 38;
        // the DWord views of the high halves overlap the QWord ones, as in Cloud Hypervisor.
        let resources = AML.Method("MCRS", arguments: 1, serialized: true) {
            AML.Acquire(lock, timeout: 0xffff)
            AML.Store(AML.Arg(0), into: select)
            AML.Name("MR64", AML.ResourceTemplate([
                AML.AddressSpace(.qword, .memory(.cacheable, readWrite: true), minimum: 0, maximum: 0xffff_ffff_ffff_fffe),
            ]))
            AML.CreateQWordField(AML.NameString("MR64"), UInt8(14), "MINL")
            AML.CreateDWordField(AML.NameString("MR64"), UInt8(18), "MINH")
            AML.CreateQWordField(AML.NameString("MR64"), UInt8(22), "MAXL")
            AML.CreateDWordField(AML.NameString("MR64"), UInt8(26), "MAXH")
            AML.CreateQWordField(AML.NameString("MR64"), UInt8(38), "LENL")
            AML.CreateDWordField(AML.NameString("MR64"), UInt8(42), "LENH")
            AML.Store(AML.NameString("\\_SB_.MHPC.MHBL"), into: AML.NameString("MINL"))
            AML.Store(AML.NameString("\\_SB_.MHPC.MHBH"), into: AML.NameString("MINH"))
            AML.Store(AML.NameString("\\_SB_.MHPC.MHLL"), into: AML.NameString("LENL"))
            AML.Store(AML.NameString("\\_SB_.MHPC.MHLH"), into: AML.NameString("LENH"))
            AML.add(AML.NameString("MINL"), AML.NameString("LENL"), into: AML.NameString("MAXL"))
            AML.add(AML.NameString("MINH"), AML.NameString("LENH"), into: AML.NameString("MAXH"))
            AML.If(AML.less(AML.NameString("MAXL"), AML.NameString("MINL")), then: [
                AML.add(AML.one, AML.NameString("MAXH"), into: AML.NameString("MAXH")),
            ])
            AML.subtract(AML.NameString("MAXL"), AML.one, into: AML.NameString("MAXL"))
            AML.Release(lock)
            AML.Return(AML.NameString("MR64"))
        }
        var devices: [any AMLConvertible] = []
        for index in 0..<slots {
            let uid = UInt32(index)
            devices.append(AML.Device(try memoryDeviceName(index)) {
                AML.Name("_HID", AML.EISAID("PNP0C80"))
                AML.Name("_UID", uid)
                AML.Method("_STA") { AML.Return(AML.MethodCall("MSTA", [uid])) }
                AML.Method("_CRS") { AML.Return(AML.MethodCall("MCRS", [uid])) }
            })
        }
        return AML.Device("\\_SB_.MHPC") {
            AML.Name("_HID", AML.EISAID("PNP0A06"))
            AML.Name("_UID", "Memory Hotplug Controller")
            AML.Mutex(lock, syncLevel: 0)
            AML.Name("_CRS", AML.ResourceTemplate([
                AML.AddressSpace(.qword, .memory(.notCacheable, readWrite: true),
                                 minimum: address, maximum: address + (memoryHotplugRegisterSize - 1)),
            ]))
            AML.OperationRegion("MHPR", space: .systemMemory, offset: address, length: memoryHotplugRegisterSize)
            AML.Field("MHPR", access: .dword, update: .preserve, [
                .named("MHBL", bits: 32), .named("MHBH", bits: 32), .named("MHLL", bits: 32), .named("MHLH", bits: 32),
            ])
            AML.Field("MHPR", access: .dword, update: .preserve, [.reserved(bits: 128), .named("MHPX", bits: 32)])
            AML.Field("MHPR", access: .byte, update: .writeAsZeros, [
                .reserved(bits: 160),
                .named("MEN_", bits: 1), .named("MINS", bits: 1), .named("MRMV", bits: 1), .named("MEJ0", bits: 1),
            ])
            AML.Field("MHPR", access: .dword, update: .preserve, [
                .named("MSEL", bits: 32), .named("MOEV", bits: 32), .named("MOSC", bits: 32),
            ])
            AML.Method("MTFY", arguments: 2, serialized: true, notifies)
            scan
            status
            resources
            devices
        }
    }
}
