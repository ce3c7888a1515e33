extension PlatformAML {
    /// The size of the PCI hotplug controller's register block (`PCIU`, `PCID`, `B0EJ`, `PSEG`).
    public static let pciHotplugRegisterSize: UInt64 = 0x10

    /// The path of segment `segment`'s host bridge, `\_SB_.PCxx` (two uppercase hexadecimal digits).
    static func hostBridgePath(_ segment: UInt16) -> String {
        "\\_SB_.PC" + String(segment, radix: 16, uppercase: true).leftPadded(to: 2)
    }

    /// Cloud Hypervisor's PCI hotplug controller, `\_SB_.PHPR`: the register block at
    /// `address`, its fields, the eject method the slots' `_EJ0` call and the scan the
    /// Generic Event Device's PCI cause calls (each segment's `PCNT`).
    ///
    /// ```text
    /// Device (\_SB_.PHPR) {
    ///     Name (_HID, EisaId ("PNP0A06"))
    ///     Name (_STA, 0x0B)
    ///     Name (_UID, "PCI Hotplug Controller")
    ///     Mutex (BLCK, 0x00)
    ///     Name (_CRS, ResourceTemplate () { QWordMemory (..., address, address + 0xF, ..., 0x10) })
    ///     OperationRegion (PCST, SystemMemory, address, 0x10)
    ///     Field (PCST, DWordAcc, NoLock, WriteAsZeros) { PCIU, 32, PCID, 32, B0EJ, 32, PSEG, 32 }
    ///     Method (PCEJ, 2, Serialized) {          // eject slot Arg0 of segment Arg1
    ///         Acquire (BLCK, 0xFFFF)
    ///         Store (Arg1, PSEG)
    ///         ShiftLeft (One, Arg0, B0EJ)
    ///         Release (BLCK)
    ///         Return (Zero)
    ///     }
    ///     Method (PSCN, 0, Serialized) { \_SB_.PC00.PCNT () ... }
    /// }
    /// ```
    public static func pciHotplugController(address: UInt64, segments: [UInt16] = [0]) -> AML.Device {
        let scans: [any AMLConvertible] = segments.map { AML.MethodCall(AML.NameString(stringLiteral: hostBridgePath($0) + ".PCNT")) }
        return AML.Device("\\_SB_.PHPR") {
            AML.Name("_HID", AML.EISAID("PNP0A06"))
            AML.Name("_STA", UInt8(0x0b))
            AML.Name("_UID", "PCI Hotplug Controller")
            AML.Mutex("BLCK", syncLevel: 0)
            AML.Name("_CRS", AML.ResourceTemplate([
                AML.AddressSpace(.qword, .memory(.notCacheable, readWrite: true),
                                 minimum: address, maximum: address + (pciHotplugRegisterSize - 1)),
            ]))
            AML.OperationRegion("PCST", space: .systemMemory, offset: address, length: pciHotplugRegisterSize)
            AML.Field("PCST", access: .dword, update: .writeAsZeros, [
                .named("PCIU", bits: 32), .named("PCID", bits: 32), .named("B0EJ", bits: 32), .named("PSEG", bits: 32),
            ])
            AML.Method("PCEJ", arguments: 2, serialized: true) {
                AML.Acquire("BLCK", timeout: 0xffff)
                AML.Store(AML.Arg(1), into: AML.NameString("PSEG"))
                AML.shiftLeft(AML.one, AML.Arg(0), into: AML.NameString("B0EJ"))
                AML.Release("BLCK")
                AML.Return(AML.zero)
            }
            AML.Method("PSCN", serialized: true, scans)
        }
    }

    /// The hotplug slots of segment `segment`'s host bridge, as Cloud Hypervisor writes them
    /// inside it (here in a `Scope` of the bridge, so the bridge itself stays as it is): one
    /// device per device number, the notify helper and the scan.
    ///
    /// ```text
    /// Scope (\_SB_.PC00) {
    ///     Device (S000) {
    ///         Name (_SUN, Zero)
    ///         Name (_ADR, Zero)                  // device number << 16
    ///         Method (_EJ0, 1, Serialized) { \_SB_.PHPR.PCEJ (_SUN, _SEG) }
    ///     }
    ///     ...                                    // S001 ... S031
    ///     Method (DVNT, 2, Serialized) {          // Notify (Sxxx, Arg1) for each bit of Arg0
    ///         And (Arg0, One, Local0)
    ///         If (LEqual (Local0, One)) { Notify (S000, Arg1) }
    ///         ...
    ///     }
    ///     Method (PCNT, 0, Serialized) {          // device check for PCIU, eject request for PCID
    ///         Acquire (\_SB_.PHPR.BLCK, 0xFFFF)
    ///         Store (_SEG, \_SB_.PHPR.PSEG)
    ///         DVNT (\_SB_.PHPR.PCIU, One)
    ///         DVNT (\_SB_.PHPR.PCID, 0x03)
    ///         Release (\_SB_.PHPR.BLCK)
    ///     }
    /// }
    /// ```
    public static func pciHotplugSlots(segment: UInt16 = 0) throws(ACPIError) -> AML.Scope {
        var slots: [any AMLConvertible] = []
        var notifies: [any AMLConvertible] = []
        for number in 0..<32 {
            let digits = String(number)
            let name = try AML.NameString("S" + String(repeating: "0", count: 3 - digits.count) + digits)
            slots.append(AML.Device(name) {
                AML.Name("_SUN", AML.Integer(UInt64(number)))
                AML.Name("_ADR", AML.Integer(UInt64(number) << 16))
                AML.Method("_EJ0", arguments: 1, serialized: true) {
                    AML.MethodCall("\\_SB_.PHPR.PCEJ", [AML.NameString("_SUN"), AML.NameString("_SEG")])
                }
            })
            let mask = UInt32(1) << UInt32(number)
            notifies.append(AML.and(AML.Arg(0), mask, into: AML.Local(0)))
            notifies.append(AML.If(AML.equal(AML.Local(0), mask), then: [AML.Notify(name, AML.Arg(1))]))
        }
        let lock: AML.NameString = "\\_SB_.PHPR.BLCK"
        let scan = AML.Method("PCNT", serialized: true) {
            AML.Acquire(lock, timeout: 0xffff)
            AML.Store(AML.NameString("_SEG"), into: AML.NameString("\\_SB_.PHPR.PSEG"))
            AML.MethodCall("DVNT", [AML.NameString("\\_SB_.PHPR.PCIU"), AML.one])
            AML.MethodCall("DVNT", [AML.NameString("\\_SB_.PHPR.PCID"), UInt8(3)])
            AML.Release(lock)
        }
        return AML.Scope(AML.NameString(stringLiteral: hostBridgePath(segment))) {
            slots
            AML.Method("DVNT", arguments: 2, serialized: true, notifies)
            scan
        }
    }
}
