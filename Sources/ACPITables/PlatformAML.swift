/// The DSDT objects Cloud Hypervisor gives an x86-64 guest, as AML values.
///
/// Each builder reproduces the namespace object Cloud Hypervisor emits (names, IDs and
/// resources); ``ACPITableSet`` assembles them into a DSDT, and a VMM can also pick them
/// one by one.
public enum PlatformAML {
    /// The sleep type value of S5 (soft off) in `\_S5_`; the shutdown device recognises
    /// `SLP_TYP` = 5 with `SLP_EN` set, written as the byte 0x34.
    public static let s5SleepType: UInt8 = 5
    /// The most processor devices `Cxxx` names can number (three hexadecimal digits).
    public static let maximumProcessors = 0x1000

    /// `Name(_S5_, Package() { 5 })`: the sleep type for soft off, a one-element package
    /// as Cloud Hypervisor writes it (ACPICA uses the element for both `SLP_TYPa` and
    /// `SLP_TYPb`).
    public static var s5SleepState: AML.Name { AML.Name("_S5_", AML.Package([s5SleepType])) }

    /// The 16550 serial port as Cloud Hypervisor describes it on x86-64:
    ///
    /// ```text
    /// Device (\_SB_.COM1) {
    ///     Name (_HID, EisaId ("PNP0501"))
    ///     Name (_UID, Zero)
    ///     Name (_DDN, "COM1")
    ///     Name (_CRS, ResourceTemplate () {
    ///         Interrupt (ResourceConsumer, Edge, ActiveHigh, Exclusive) { 4 }
    ///         IO (Decode16, 0x03F8, 0x03F8, 0x00, 0x08)
    ///     })
    /// }
    /// ```
    public static func serialPort(port: UInt16 = 0x3f8, irq: UInt32 = 4) -> AML.Device {
        AML.Device("\\_SB_.COM1") {
            AML.Name("_HID", AML.EISAID("PNP0501"))
            AML.Name("_UID", AML.zero)
            AML.Name("_DDN", "COM1")
            AML.Name("_CRS", AML.ResourceTemplate([
                AML.Interrupt(edgeTriggered: true, activeLow: false, shared: false, [irq]),
                AML.IO(minimum: port, maximum: port, alignment: 0, length: 8),
            ]))
        }
    }

    /// The CMOS real-time clock at ports 0x70-0x71 (`PNP0B00`).
    ///
    /// Cloud Hypervisor (v53.0) emulates this device but describes it nowhere; with its
    /// hardware-reduced FADT Linux then registers a platform `rtc_cmos` device whose IRQ 8 was
    /// never mapped through ACPI (no legacy PIC), and the driver's probe fails with -EINVAL.
    /// Described here, the device is probed through PNP ACPI instead:
    ///
    /// ```text
    /// Device (\_SB_.RTC_) {
    ///     Name (_HID, EisaId ("PNP0B00"))
    ///     Name (_UID, Zero)
    ///     Name (_CRS, ResourceTemplate () {
    ///         IO (Decode16, 0x0070, 0x0070, 0x01, 0x02)
    ///         IRQNoFlags () { 8 }          // only when the clock raises its interrupt
    ///     })
    /// }
    /// ```
    ///
    /// Without an interrupt Linux's `rtc_cmos` still binds (it takes the port and reports
    /// no alarm), and `hwclock` polls the update-in-progress flag instead of waiting for an
    /// update interrupt; an interrupt that is described but never raised would make it wait
    /// for ten seconds and then warn.
    public struct CMOSRealTimeClock: Hashable, Sendable {
        /// The ISA IRQ of the real-time clock on a PC.
        public static let pcIRQ: UInt8 = 8

        /// The first I/O port (index register; the data register follows).
        public var port: UInt16
        /// How many ports the device decodes.
        public var length: UInt8
        /// The ISA IRQ (0...15) of its periodic, alarm and update interrupts, or `nil`
        /// when the emulated clock raises none.
        public var irq: UInt8?

        /// A clock at `port` decoding `length` ports, with an optional ISA IRQ.
        public init(port: UInt16 = 0x70, length: UInt8 = 2, irq: UInt8? = nil) {
            self.port = port
            self.length = length
            self.irq = irq
        }

        /// The `\_SB_.RTC_` device.
        public var device: AML.Device {
            var resources: [any AMLResourceDescriptor] = [AML.IO(minimum: port, maximum: port, alignment: 1, length: length)]
            if let irq { resources.append(AML.IRQ(noFlags: [irq])) }
            return AML.Device("\\_SB_.RTC_") {
                AML.Name("_HID", AML.EISAID("PNP0B00"))
                AML.Name("_UID", AML.zero)
                AML.Name("_CRS", AML.ResourceTemplate(resources))
            }
        }
    }

    /// The power button, a control-method device: `Device (\_SB_.PWRB) { Name (_HID,
    /// EisaId ("PNP0C0C")) Name (_UID, Zero) }`. The Generic Event Device notifies it
    /// (`Notify (\_SB_.PWRB, 0x80)`) when the VMM presses the button.
    public static var powerButton: AML.Device {
        AML.Device("\\_SB_.PWRB") {
            AML.Name("_HID", AML.EISAID("PNP0C0C"))
            AML.Name("_UID", AML.zero)
        }
    }

    /// The `_MAT` buffer of a processor: its MADT structure with the enabled flag set.
    public static func processorMAT(uid: UInt32, apicID: UInt32) -> [UInt8] {
        MADT.Entry.processor(uid: uid, apicID: apicID, flags: .enabled).bytes
    }

    /// The processor container with one processor device per vCPU, as Cloud Hypervisor
    /// writes it without CPU hotplug:
    ///
    /// ```text
    /// Device (\_SB_.CPUS) {
    ///     Name (_HID, "ACPI0010")
    ///     Name (_CID, EisaId ("PNP0A05"))
    ///     Method (CSCN, 0, Serialized) { }
    ///     Device (C000) {
    ///         Name (_HID, "ACPI0007")
    ///         Name (_UID, Zero)
    ///         Method (_STA, 0, NotSerialized) { Return (0x0F) }
    ///         Method (_PXM, 0, NotSerialized) { Return (Zero) }
    ///         Name (_MAT, Buffer (0x08) { 0x00, 0x08, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00 })
    ///     }
    ///     ...
    /// }
    /// ```
    ///
    /// Device `Cxxx` is vCPU `xxx` (hexadecimal), its `_UID` is the vCPU index (the MADT
    /// processor UID) and `_MAT` is its MADT structure. `CSCN` is the (empty) CPU scan the
    /// Generic Event Device calls.
    ///
    /// - Throws: ``ACPIError/tooManyProcessors(count:maximum:)`` beyond 4096 vCPUs.
    public static func processors(apicIDs: [UInt32]) throws(ACPIError) -> AML.Device {
        guard apicIDs.count <= maximumProcessors else {
            throw .tooManyProcessors(count: apicIDs.count, maximum: maximumProcessors)
        }
        var devices: [any AMLConvertible] = []
        for (index, apicID) in apicIDs.enumerated() {
            let digits = String(index, radix: 16, uppercase: true)
            let name = try AML.NameString("C" + String(repeating: "0", count: 3 - digits.count) + digits)
            devices.append(AML.Device(name) {
                AML.Name("_HID", "ACPI0007")
                AML.Name("_UID", UInt32(index))
                AML.Method("_STA") { AML.Return(UInt8(0x0f)) }
                AML.Method("_PXM") { AML.Return(AML.zero) }
                AML.Name("_MAT", AML.Buffer(processorMAT(uid: UInt32(index), apicID: apicID)))
            })
        }
        return AML.Device("\\_SB_.CPUS") {
            AML.Name("_HID", "ACPI0010")
            AML.Name("_CID", AML.EISAID("PNP0A05"))
            AML.Method("CSCN", serialized: true, [])
            devices
        }
    }

    /// The motherboard resources device reserving the PCI ECAM windows, so the OS trusts
    /// the MCFG: `Device (\_SB_.MBRD) { Name (_HID, EisaId ("PNP0C02")) Name (_UID, Zero)
    /// Name (_CRS, ResourceTemplate () { Memory32Fixed (ReadWrite, base, size) ... }) }`.
    public static func motherboardResources(ecam allocations: [MCFG.Allocation]) -> AML.Device {
        AML.Device("\\_SB_.MBRD") {
            AML.Name("_HID", AML.EISAID("PNP0C02"))
            AML.Name("_UID", AML.zero)
            AML.Name("_CRS", AML.ResourceTemplate(allocations.map {
                AML.Memory32Fixed(base: UInt32(truncatingIfNeeded: $0.baseAddress), length: UInt32(truncatingIfNeeded: $0.size))
            }))
        }
    }

    /// Cloud Hypervisor's Generic Event Device: a one-byte MMIO register that tells the
    /// guest why the GED interrupt fired, and the GED (`ACPI0013`) whose `_EVT` reads it.
    public struct GenericEventDevice: Hashable, Sendable {
        /// The causes the GED reports, one bit each in its register.
        public struct Events: OptionSet, Hashable, Sendable {
            /// The raw register bits.
            public let rawValue: UInt8

            /// Wraps raw bits.
            public init(rawValue: UInt8) { self.rawValue = rawValue }

            /// Bit 0: CPUs were added or removed; calls `\_SB_.CPUS.CSCN`.
            public static let cpuHotplug = Events(rawValue: 1 << 0)
            /// Bit 1: memory was added; calls `\_SB_.MHPC.MSCN`.
            public static let memoryHotplug = Events(rawValue: 1 << 1)
            /// Bit 2: PCI devices changed; calls `\_SB_.PHPR.PSCN`.
            public static let pciHotplug = Events(rawValue: 1 << 2)
            /// Bit 3: the power button was pressed; notifies `\_SB_.PWRB` with 0x80.
            public static let powerButton = Events(rawValue: 1 << 3)
        }

        /// The size of the GED's MMIO register.
        public static let registerSize: UInt64 = 1

        /// The guest physical address of the one-byte notification register.
        public var address: UInt64
        /// The GSI the GED interrupt arrives on.
        public var irq: UInt32
        /// Which causes `ESCN` dispatches (only those whose target objects exist).
        public var events: Events

        /// A GED at `address` interrupting on `irq`.
        public init(address: UInt64, irq: UInt32, events: Events = [.cpuHotplug, .powerButton]) {
            self.address = address
            self.irq = irq
            self.events = events
        }

        /// The objects, as Cloud Hypervisor writes them:
        ///
        /// ```text
        /// Device (\_SB_.GEC_) {
        ///     Name (_HID, EisaId ("PNP0A06"))
        ///     Name (_UID, "Generic Event Controller")
        ///     Name (_CRS, ResourceTemplate () { QWordMemory (..., address, address, ..., 1) })
        ///     OperationRegion (GDST, SystemMemory, address, 1)
        ///     Field (GDST, ByteAcc, NoLock, WriteAsZeros) { GDAT, 8 }
        ///     Method (ESCN, 0, Serialized) {
        ///         Store (GDAT, Local0)
        ///         And (Local0, One, Local1)
        ///         If (LEqual (Local1, One)) { \_SB_.CPUS.CSCN () }
        ///         ...
        ///         And (Local0, 0x08, Local1)
        ///         If (LEqual (Local1, 0x08)) { Notify (\_SB_.PWRB, 0x80) }
        ///     }
        /// }
        /// Device (\_SB_.GED_) {
        ///     Name (_HID, "ACPI0013")
        ///     Name (_UID, Zero)
        ///     Name (_CRS, ResourceTemplate () { Interrupt (ResourceConsumer, Edge, ActiveHigh, Exclusive) { irq } })
        ///     Method (_EVT, 1, Serialized) { \_SB_.GEC_.ESCN () }
        /// }
        /// ```
        public var definitions: [any AMLConvertible] {
            let handlers: [(Events, any AMLConvertible)] = [
                (.cpuHotplug, AML.MethodCall("\\_SB_.CPUS.CSCN")),
                (.memoryHotplug, AML.MethodCall("\\_SB_.MHPC.MSCN")),
                (.pciHotplug, AML.MethodCall("\\_SB_.PHPR.PSCN")),
                (.powerButton, AML.Notify("\\_SB_.PWRB", UInt8(0x80))),
            ]
            var scan: [any AMLConvertible] = [AML.Store(AML.NameString("GDAT"), into: AML.Local(0))]
            for (event, action) in handlers where events.contains(event) {
                scan.append(AML.and(AML.Local(0), event.rawValue, into: AML.Local(1)))
                scan.append(AML.If(AML.equal(AML.Local(1), event.rawValue), then: [action]))
            }
            let controller = AML.Device("\\_SB_.GEC_") {
                AML.Name("_HID", AML.EISAID("PNP0A06"))
                AML.Name("_UID", "Generic Event Controller")
                AML.Name("_CRS", AML.ResourceTemplate([
                    AML.AddressSpace(.qword, .memory(.notCacheable, readWrite: true),
                                     // Parenthesized: a register in the last byte of the address space must not overflow.
                                     minimum: address, maximum: address + (Self.registerSize - 1)),
                ]))
                AML.OperationRegion("GDST", space: .systemMemory, offset: address, length: Self.registerSize)
                AML.Field("GDST", access: .byte, update: .writeAsZeros, [.named("GDAT", bits: 8)])
                AML.Method("ESCN", serialized: true, scan)
            }
            let ged = AML.Device("\\_SB_.GED_") {
                AML.Name("_HID", "ACPI0013")
                AML.Name("_UID", AML.zero)
                AML.Name("_CRS", AML.ResourceTemplate([
                    AML.Interrupt(edgeTriggered: true, activeLow: false, shared: false, [irq]),
                ]))
                AML.Method("_EVT", arguments: 1, serialized: true) { AML.MethodCall("\\_SB_.GEC_.ESCN") }
            }
            return [controller, ged]
        }
    }
}

extension PlatformAML {
    /// The windows a PCI host bridge forwards, for its `_CRS`.
    public struct PCIHostBridgeWindows: Hashable, Sendable {
        /// The segment (PCI domain) number.
        public var segment: UInt16
        /// The first and last bus numbers of the segment.
        public var buses: ClosedRange<UInt8>
        /// The 32-bit MMIO window for BARs (base, size).
        public var mmio32: (base: UInt64, size: UInt64)
        /// The 64-bit MMIO window, if any.
        public var mmio64: (base: UInt64, size: UInt64)?

        /// Creates the description.
        public init(segment: UInt16 = 0, buses: ClosedRange<UInt8> = 0...0, mmio32: (base: UInt64, size: UInt64),
                    mmio64: (base: UInt64, size: UInt64)? = nil) {
            self.segment = segment
            self.buses = buses
            self.mmio32 = mmio32
            self.mmio64 = mmio64
        }

        /// Equality over every field.
        public static func == (a: Self, b: Self) -> Bool {
            a.segment == b.segment && a.buses == b.buses && a.mmio32 == b.mmio32 && a.mmio64?.base == b.mmio64?.base && a.mmio64?.size == b.mmio64?.size
        }

        /// Hashes every field.
        public func hash(into hasher: inout Hasher) {
            hasher.combine(segment); hasher.combine(buses.lowerBound); hasher.combine(buses.upperBound)
            hasher.combine(mmio32.base); hasher.combine(mmio32.size)
            hasher.combine(mmio64?.base); hasher.combine(mmio64?.size)
        }
    }

    /// A PCI Express host bridge as Cloud Hypervisor describes one per segment
    /// (`\_SB_.PCxx`, `PNP0A08` compatible with `PNP0A03`): its bus range, the legacy
    /// configuration ports 0xCF8-0xCFF (segment 0), the I/O ports around them, and the MMIO
    /// windows BARs are placed in.
    public static func pciHostBridge(_ windows: PCIHostBridgeWindows) -> AML.Device {
        let name = "\\_SB_.PC" + String(windows.segment, radix: 16, uppercase: true).leftPadded(to: 2)
        var resources: [any AMLResourceDescriptor] = [
            AML.AddressSpace(.word, .busNumber, minimum: UInt64(windows.buses.lowerBound), maximum: UInt64(windows.buses.upperBound)),
        ]
        if windows.segment == 0 {
            resources.append(AML.IO(minimum: 0xCF8, maximum: 0xCF8, alignment: 1, length: 8))
            resources.append(AML.AddressSpace(.word, .io, minimum: 0x0000, maximum: 0x0CF7))
            resources.append(AML.AddressSpace(.word, .io, minimum: 0x0D00, maximum: 0xFFFF))
        }
        resources.append(AML.AddressSpace(.dword, .memory(.notCacheable, readWrite: true),
                                          minimum: windows.mmio32.base, maximum: windows.mmio32.base + windows.mmio32.size - 1))
        if let mmio64 = windows.mmio64 {
            resources.append(AML.AddressSpace(.qword, .memory(.notCacheable, readWrite: true),
                                              minimum: mmio64.base, maximum: mmio64.base + mmio64.size - 1))
        }
        return AML.Device(AML.NameString(stringLiteral: name)) {
            AML.Name("_HID", AML.EISAID("PNP0A08"))
            AML.Name("_CID", AML.EISAID("PNP0A03"))
            AML.Name("_SEG", AML.Integer(UInt64(windows.segment)))
            AML.Name("_UID", AML.Integer(UInt64(windows.segment)))
            AML.Name("_BBN", AML.Integer(UInt64(windows.buses.lowerBound)))
            AML.Name("_CRS", AML.ResourceTemplate(resources))
            pciHostBridgeOSC
        }
    }

    /// The PCI Express `_OSC` UUID (PCI Firmware Specification).
    public static let pciHostBridgeOSCUUID = "33DB4D5B-1FF7-401C-9657-7441C03DD766"

    /// The host bridge's `_OSC`: for the PCI Express UUID the OS gets every feature it asks
    /// for except SHPC hotplug (there is no SHPC controller); any other UUID is answered
    /// "unrecognized" (bit 2 of the first capabilities word).
    ///
    /// ```text
    /// Method (_OSC, 4, NotSerialized) {
    ///     CreateDWordField (Arg3, Zero, CDW1)
    ///     If (LEqual (Arg0, ToUUID ("33db4d5b-1ff7-401c-9657-7441c03dd766"))) {
    ///         CreateDWordField (Arg3, 0x08, CDW3)
    ///         And (CDW3, 0x1D, CDW3)
    ///     } Else {
    ///         Or (CDW1, 0x04, CDW1)
    ///     }
    ///     Return (Arg3)
    /// }
    /// ```
    public static var pciHostBridgeOSC: AML.Method {
        AML.Method("_OSC", arguments: 4, serialized: false) {
            AML.CreateDWordField(AML.Arg(3), AML.zero, "CDW1")
            AML.If(AML.equal(AML.Arg(0), AML.uuid(pciHostBridgeOSCUUID)),
                   then: [
                       AML.CreateDWordField(AML.Arg(3), AML.Integer(8), "CDW3"),
                       AML.and(AML.NameString("CDW3"), AML.Integer(0x1D), into: AML.NameString("CDW3")),
                   ],
                   else: [AML.or(AML.NameString("CDW1"), AML.Integer(4), into: AML.NameString("CDW1"))])
            AML.Return(AML.Arg(3))
        }
    }
}

extension String {
    /// The string with leading zeros up to `width` characters.
    func leftPadded(to width: Int) -> String { count >= width ? self : String(repeating: "0", count: width - count) + self }
}
