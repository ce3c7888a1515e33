extension PlatformAML {
    /// The size of the CPU hotplug controller's register block (selection, status, data).
    public static let cpuHotplugRegisterSize: UInt64 = 0xc

    /// The name of processor device `index`: `C` and three uppercase hexadecimal digits.
    static func processorName(_ index: Int) throws(ACPIError) -> AML.NameString {
        let digits = String(index, radix: 16, uppercase: true)
        return try AML.NameString("C" + String(repeating: "0", count: 3 - digits.count) + digits)
    }

    /// Cloud Hypervisor's CPU hotplug controller, `\_SB_.PRES`: the register block at
    /// `address` and the fields the CPU methods use.
    ///
    /// ```text
    /// Device (\_SB_.PRES) {
    ///     Name (_HID, EisaId ("PNP0A06"))
    ///     Name (_UID, "CPU Hotplug Controller")
    ///     Mutex (CPLK, 0x00)
    ///     Name (_CRS, ResourceTemplate () { QWordMemory (..., address, address + 0xB, ..., 0xC) })
    ///     OperationRegion (PRST, SystemMemory, address, 0x0C)
    ///     Field (PRST, ByteAcc, NoLock, WriteAsZeros) { Offset (0x04), CPEN, 1, CINS, 1, CRMV, 1, CEJ0, 1, , 4, CCMD, 8 }
    ///     Field (PRST, DWordAcc, NoLock, Preserve) { CSEL, 32, , 32, CDAT, 32 }
    /// }
    /// ```
    public static func cpuHotplugController(address: UInt64) -> AML.Device {
        AML.Device("\\_SB_.PRES") {
            AML.Name("_HID", AML.EISAID("PNP0A06"))
            AML.Name("_UID", "CPU Hotplug Controller")
            AML.Mutex("CPLK", syncLevel: 0)
            AML.Name("_CRS", AML.ResourceTemplate([
                AML.AddressSpace(.qword, .memory(.notCacheable, readWrite: true),
                                 minimum: address, maximum: address + (cpuHotplugRegisterSize - 1)),
            ]))
            AML.OperationRegion("PRST", space: .systemMemory, offset: address, length: cpuHotplugRegisterSize)
            AML.Field("PRST", access: .byte, update: .writeAsZeros, [
                .reserved(bits: 32),
                .named("CPEN", bits: 1), .named("CINS", bits: 1), .named("CRMV", bits: 1), .named("CEJ0", bits: 1),
                .reserved(bits: 4),
                .named("CCMD", bits: 8),
            ])
            AML.Field("PRST", access: .dword, update: .preserve, [
                .named("CSEL", bits: 32), .reserved(bits: 32), .named("CDAT", bits: 32),
            ])
        }
    }

    /// The processor container as Cloud Hypervisor writes it with CPU hotplug: one
    /// processor device per possible vCPU (`apicIDs` lists all `max_vcpus`), whose `_STA`
    /// asks the controller (`\_SB_.PRES`, see ``cpuHotplugController(address:)``) whether
    /// the vCPU is present, and the methods the Generic Event Device's scan uses:
    ///
    /// ```text
    /// Device (\_SB_.CPUS) {
    ///     Name (_HID, "ACPI0010")
    ///     Name (_CID, EisaId ("PNP0A05"))
    ///     Method (CSTA, 1, Serialized) {        // 0x0F when vCPU Arg0 is enabled, else 0
    ///         Acquire (\_SB_.PRES.CPLK, 0xFFFF)
    ///         Store (Arg0, \_SB_.PRES.CSEL)
    ///         Store (Zero, Local0)
    ///         If (LEqual (\_SB_.PRES.CPEN, One)) { Store (0x0F, Local0) }
    ///         Release (\_SB_.PRES.CPLK)
    ///         Return (Local0)
    ///     }
    ///     Method (CTFY, 2, Serialized) {        // Notify (Cxxx, Arg1) for vCPU Arg0
    ///         If (LEqual (Arg0, Zero)) { Notify (C000, Arg1) }
    ///         ...
    ///     }
    ///     Method (CEJ0, 1, Serialized) {        // eject vCPU Arg0
    ///         Acquire (\_SB_.PRES.CPLK, 0xFFFF)
    ///         Store (Arg0, \_SB_.PRES.CSEL)
    ///         Store (One, \_SB_.PRES.CEJ0)
    ///         Release (\_SB_.PRES.CPLK)
    ///     }
    ///     Method (CSCN, 0, Serialized) {        // notify inserted (1) and removing (3) vCPUs, acknowledge each
    ///         Acquire (\_SB_.PRES.CPLK, 0xFFFF)
    ///         Store (Zero, Local0)
    ///         While (LLess (Local0, max)) {
    ///             Store (Local0, \_SB_.PRES.CSEL)
    ///             If (LEqual (\_SB_.PRES.CINS, One)) { CTFY (Local0, One)  Store (One, \_SB_.PRES.CINS) }
    ///             If (LEqual (\_SB_.PRES.CRMV, One)) { CTFY (Local0, 0x03)  Store (One, \_SB_.PRES.CRMV) }
    ///             Add (Local0, One, Local0)
    ///         }
    ///         Release (\_SB_.PRES.CPLK)
    ///     }
    ///     Device (C000) {
    ///         Name (_HID, "ACPI0007")
    ///         Name (_UID, Zero)
    ///         Method (_STA, 0, NotSerialized) { Return (CSTA (Zero)) }
    ///         Method (_PXM, 0, NotSerialized) { Return (Zero) }
    ///         Name (_MAT, Buffer (0x08) { ... })   // the MADT entry with the enabled flag
    ///         Method (_EJ0, 1, NotSerialized) { CEJ0 (Zero) }
    ///     }
    ///     ...
    /// }
    /// ```
    ///
    /// - Throws: ``ACPIError/tooManyProcessors(count:maximum:)`` beyond 4096 vCPUs.
    public static func hotpluggableProcessors(apicIDs: [UInt32]) throws(ACPIError) -> AML.Device {
        guard apicIDs.count <= maximumProcessors else {
            throw .tooManyProcessors(count: apicIDs.count, maximum: maximumProcessors)
        }
        let lock: AML.NameString = "\\_SB_.PRES.CPLK"
        let select: AML.NameString = "\\_SB_.PRES.CSEL"
        let count = UInt32(apicIDs.count)
        let status = AML.Method("CSTA", arguments: 1, serialized: true) {
            AML.Acquire(lock, timeout: 0xffff)
            AML.Store(AML.Arg(0), into: select)
            AML.Store(AML.zero, into: AML.Local(0))
            AML.If(AML.equal(AML.NameString("\\_SB_.PRES.CPEN"), AML.one), then: [AML.Store(UInt8(0x0f), into: AML.Local(0))])
            AML.Release(lock)
            AML.Return(AML.Local(0))
        }
        var notifies: [any AMLConvertible] = []
        for index in apicIDs.indices {
            notifies.append(AML.If(AML.equal(AML.Arg(0), UInt32(index)), then: [AML.Notify(try processorName(index), AML.Arg(1))]))
        }
        let notify = AML.Method("CTFY", arguments: 2, serialized: true, notifies)
        let eject = AML.Method("CEJ0", arguments: 1, serialized: true) {
            AML.Acquire(lock, timeout: 0xffff)
            AML.Store(AML.Arg(0), into: select)
            AML.Store(AML.one, into: AML.NameString("\\_SB_.PRES.CEJ0"))
            AML.Release(lock)
        }
        let scan = AML.Method("CSCN", serialized: true) {
            AML.Acquire(lock, timeout: 0xffff)
            AML.Store(AML.zero, into: AML.Local(0))
            AML.While(AML.less(AML.Local(0), count), [
                AML.Store(AML.Local(0), into: select),
                AML.If(AML.equal(AML.NameString("\\_SB_.PRES.CINS"), AML.one), then: [
                    AML.MethodCall("CTFY", [AML.Local(0), AML.one]),
                    AML.Store(AML.one, into: AML.NameString("\\_SB_.PRES.CINS")),
                ]),
                AML.If(AML.equal(AML.NameString("\\_SB_.PRES.CRMV"), AML.one), then: [
                    AML.MethodCall("CTFY", [AML.Local(0), UInt8(3)]),
                    AML.Store(AML.one, into: AML.NameString("\\_SB_.PRES.CRMV")),
                ]),
                AML.add(AML.Local(0), AML.one, into: AML.Local(0)),
            ])
            AML.Release(lock)
        }
        var devices: [any AMLConvertible] = []
        for (index, apicID) in apicIDs.enumerated() {
            let uid = UInt32(index)
            devices.append(AML.Device(try processorName(index)) {
                AML.Name("_HID", "ACPI0007")
                AML.Name("_UID", uid)
                AML.Method("_STA") { AML.Return(AML.MethodCall("CSTA", [uid])) }
                AML.Method("_PXM") { AML.Return(AML.zero) }
                AML.Name("_MAT", AML.Buffer(processorMAT(uid: uid, apicID: apicID)))
                AML.Method("_EJ0", arguments: 1) { AML.MethodCall("CEJ0", [uid]) }
            })
        }
        return AML.Device("\\_SB_.CPUS") {
            AML.Name("_HID", "ACPI0010")
            AML.Name("_CID", AML.EISAID("PNP0A05"))
            status
            notify
            eject
            scan
            devices
        }
    }
}
