/// The Fixed ACPI Description Table (signature `"FACP"`), ACPI 6.x revision 6, 276 bytes,
/// in Cloud Hypervisor's hardware-reduced form: no PM1 blocks, no SCI, no FACS; the OS
/// sleeps through the sleep control/status registers and resets through the reset register.
///
/// Fields written (offsets from the table start; everything else is 0):
///
/// | offset | size | field |
/// |---|---|---|
/// | 109 | 2 | IA-PC boot architecture flags (0, as Cloud Hypervisor) |
/// | 112 | 4 | flags |
/// | 116 | 12 | `RESET_REG` (GAS) |
/// | 128 | 1 | `RESET_VALUE` |
/// | 131 | 1 | FADT minor version (3: ACPI 6.3) |
/// | 140 | 8 | `X_DSDT` |
/// | 208 | 12 | `X_PM_TMR_BLK` (GAS), when a PM timer exists |
/// | 244 | 12 | `SLEEP_CONTROL_REG` (GAS) |
/// | 256 | 12 | `SLEEP_STATUS_REG` (GAS) |
/// | 268 | 8 | hypervisor vendor identity (`"CLOUDHYP"`) |
public struct FADT: ACPITable, Hashable {
    /// The table length for revision 6.
    public static let length = 276
    /// The major revision.
    public static let revision: UInt8 = 6
    /// Offset of the 32-bit `DSDT` address (left 0: `X_DSDT` is used).
    public static let dsdtOffset = 40
    /// Offset of the IA-PC boot architecture flags.
    public static let iapcBootArchitectureOffset = 109
    /// Offset of the flags.
    public static let flagsOffset = 112
    /// Offset of the reset register GAS.
    public static let resetRegisterOffset = 116
    /// Offset of the reset value.
    public static let resetValueOffset = 128
    /// Offset of the minor version.
    public static let minorVersionOffset = 131
    /// Offset of the 64-bit DSDT address.
    public static let xDSDTOffset = 140
    /// Offset of the extended PM timer block GAS.
    public static let xPMTimerBlockOffset = 208
    /// Offset of the sleep control register GAS.
    public static let sleepControlRegisterOffset = 244
    /// Offset of the sleep status register GAS.
    public static let sleepStatusRegisterOffset = 256
    /// Offset of the 8-byte hypervisor vendor identity.
    public static let hypervisorVendorIdentityOffset = 268

    /// The FADT feature flags (offset 112).
    public struct Flags: OptionSet, Hashable, Sendable {
        /// The raw 32-bit value.
        public let rawValue: UInt32

        /// Wraps a raw value.
        public init(rawValue: UInt32) { self.rawValue = rawValue }

        /// Bit 4, `PWR_BUTTON`: the power button is a control-method device (or absent),
        /// not a fixed-feature button.
        public static let powerButtonControlMethod = Flags(rawValue: 1 << 4)
        /// Bit 5, `SLP_BUTTON`: the sleep button is a control-method device (or absent).
        public static let sleepButtonControlMethod = Flags(rawValue: 1 << 5)
        /// Bit 8, `TMR_VAL_EXT`: the PM timer is 32 bits wide.
        public static let timerValueExtended = Flags(rawValue: 1 << 8)
        /// Bit 10, `RESET_REG_SUP`: the reset register is supported.
        public static let resetRegisterSupported = Flags(rawValue: 1 << 10)
        /// Bit 20, `HW_REDUCED_ACPI`: no fixed hardware (PM1, GPE, SCI); ACPI 5.0+.
        public static let hardwareReducedACPI = Flags(rawValue: 1 << 20)
        /// Bit 21, `LOW_POWER_S0_IDLE_CAPABLE`.
        public static let lowPowerS0IdleCapable = Flags(rawValue: 1 << 21)

        /// Cloud Hypervisor's flags: `HW_REDUCED_ACPI`, `RESET_REG_SUP` and `TMR_VAL_EXT`.
        public static let cloudHypervisor: Flags = [.hardwareReducedACPI, .resetRegisterSupported, .timerValueExtended]
    }

    /// The DSDT's guest physical address (`X_DSDT`).
    public var dsdtAddress: UInt64
    /// The flags.
    public var flags: Flags
    /// The reset register, or `nil` for none.
    public var resetRegister: GenericAddress?
    /// The value the OS writes to the reset register.
    public var resetValue: UInt8
    /// The sleep control register, or `nil` for none.
    public var sleepControlRegister: GenericAddress?
    /// The sleep status register, or `nil` for none.
    public var sleepStatusRegister: GenericAddress?
    /// The PM timer block, or `nil` for none.
    public var pmTimerBlock: GenericAddress?
    /// The IA-PC boot architecture flags (bit 0 legacy devices, bit 1 8042, bit 2 no VGA,
    /// bit 3 no MSI, bit 4 no ASPM, bit 5 no CMOS RTC).
    public var iapcBootArchitecture: UInt16
    /// The FADT minor version.
    public var minorVersion: UInt8
    /// The 8-byte hypervisor vendor identity (space padded; set through the initialiser,
    /// which validates it).
    public private(set) var hypervisorVendorIdentity: [UInt8]
    /// The OEM and creator fields.
    public var identity: ACPIIdentity

    /// Cloud Hypervisor's value for the reset register write.
    public static let cloudHypervisorResetValue: UInt8 = 1
    /// Cloud Hypervisor's x86-64 port for the sleep control/status and reset registers.
    public static let cloudHypervisorShutdownPort: UInt16 = 0x600

    /// A FADT with every field given.
    ///
    /// - Throws: ``ACPIError/invalidIdentifier(field:value:maximumLength:)`` for a
    ///   hypervisor vendor identity longer than 8 printable ASCII characters.
    public init(dsdtAddress: UInt64, flags: Flags = .cloudHypervisor, resetRegister: GenericAddress?,
                resetValue: UInt8 = FADT.cloudHypervisorResetValue, sleepControlRegister: GenericAddress?,
                sleepStatusRegister: GenericAddress?, pmTimerBlock: GenericAddress? = nil,
                iapcBootArchitecture: UInt16 = 0, minorVersion: UInt8 = 3,
                hypervisorVendorIdentity: String = "CLOUDHYP", identity: ACPIIdentity = .cloudHypervisor) throws(ACPIError) {
        self.dsdtAddress = dsdtAddress
        self.flags = flags
        self.resetRegister = resetRegister
        self.resetValue = resetValue
        self.sleepControlRegister = sleepControlRegister
        self.sleepStatusRegister = sleepStatusRegister
        self.pmTimerBlock = pmTimerBlock
        self.iapcBootArchitecture = iapcBootArchitecture
        self.minorVersion = minorVersion
        self.hypervisorVendorIdentity = try fixedWidthIdentifier(
            hypervisorVendorIdentity, field: "hypervisor vendor identity", width: 8)
        self.identity = identity
    }

    /// Cloud Hypervisor's x86-64 FADT: hardware-reduced, sleep control, sleep status and
    /// reset registers all the byte-wide port `shutdownPort` (reset value 1), an optional
    /// 32-bit PM timer port, vendor `"CLOUDHYP"`.
    public static func cloudHypervisor(dsdtAddress: UInt64, shutdownPort: UInt16 = FADT.cloudHypervisorShutdownPort,
                                       pmTimerPort: UInt16? = nil, identity: ACPIIdentity = .cloudHypervisor) -> FADT {
        let port = GenericAddress.ioPort(shutdownPort)
        return FADT(validDSDTAddress: dsdtAddress, resetRegister: port, sleepRegister: port,
                    pmTimerBlock: pmTimerPort.map { GenericAddress.ioPort($0, access: .dword) }, identity: identity)
    }

    /// Cloud Hypervisor's FADT from already valid values.
    private init(validDSDTAddress: UInt64, resetRegister: GenericAddress, sleepRegister: GenericAddress,
                 pmTimerBlock: GenericAddress?, identity: ACPIIdentity) {
        dsdtAddress = validDSDTAddress
        flags = .cloudHypervisor
        self.resetRegister = resetRegister
        resetValue = Self.cloudHypervisorResetValue
        sleepControlRegister = sleepRegister
        sleepStatusRegister = sleepRegister
        self.pmTimerBlock = pmTimerBlock
        iapcBootArchitecture = 0
        minorVersion = 3
        hypervisorVendorIdentity = Array("CLOUDHYP".utf8)
        self.identity = identity
    }

    /// The 276-byte table (`"FACP"`, OEM table ID `"CHFACP"`).
    public func makeSDT() -> SDT {
        var table = SDT("FACP", revision: Self.revision, oemTableID: "CHFACP", identity: identity, length: Self.length)
        table.write(iapcBootArchitecture, at: Self.iapcBootArchitectureOffset)
        table.write(flags.rawValue, at: Self.flagsOffset)
        if let resetRegister {
            table.write(resetRegister, at: Self.resetRegisterOffset)
            table.write(resetValue, at: Self.resetValueOffset)
        }
        table.write(minorVersion, at: Self.minorVersionOffset)
        table.write(dsdtAddress, at: Self.xDSDTOffset)
        if let pmTimerBlock { table.write(pmTimerBlock, at: Self.xPMTimerBlockOffset) }
        if let sleepControlRegister { table.write(sleepControlRegister, at: Self.sleepControlRegisterOffset) }
        if let sleepStatusRegister { table.write(sleepStatusRegister, at: Self.sleepStatusRegisterOffset) }
        table.write(bytes: hypervisorVendorIdentity, at: Self.hypervisorVendorIdentityOffset)
        return table
    }
}
