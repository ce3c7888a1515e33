import GuestMemory

/// The arm64 guest physical address map, as Cloud Hypervisor lays it out, with the RAM,
/// GIC and initramfs planners built on it.
///
/// ```text
/// 0x0000_0000  UEFI flash (4 MiB)
/// 0x0040_0000  GICv3 ITS, then one 128 KiB redistributor frame per vCPU, growing down
///              from the distributor
/// 0x08FF_0000  GICv3 distributor (64 KiB)
/// 0x0900_0000  PL011 UART, 0x0901_0000 PL031 RTC, 0x0902_0000 PL061 GPIO
/// 0x0905_0000  PCI I/O window (64 KiB)
/// 0x1000_0000  32-bit PCI MMIO window (512 MiB)
/// 0x3000_0000  PCI ECAM (MMCONFIG, 256 MiB: 1 MiB per segment)
/// 0x4000_0000  RAM: the FDT (2 MiB), ACPI tables (2 MiB), then the kernel
/// 0xFC00_0000  32-bit reserved hole (64 MiB, the TPM inside), no RAM
/// 0x1_0000_0000  RAM beyond 0xFC00_0000 - 0x4000_0000, then the 64-bit PCI MMIO space
/// ```
public enum AArch64Layout {
    /// Start of the UEFI flash region.
    public static let uefiStart = GuestAddress(0)
    /// Size of the UEFI flash region (4 MiB).
    public static let uefiSize: UInt64 = 0x40_0000

    // MARK: GICv3

    /// Size of the GICv3 distributor (GICD) frame.
    public static let gicDistributorSize: UInt64 = 0x1_0000
    /// Start of the GICv3 distributor: right below the legacy devices.
    public static let gicDistributorStart = GuestAddress(0x0900_0000 - 0x1_0000)
    /// Size of one vCPU's redistributor (GICR) frames: RD_base and SGI_base, 64 KiB each.
    public static let gicRedistributorSizePerVCPU: UInt64 = 0x2_0000
    /// Size of the GICv3 ITS frame (the MSI controller).
    public static let gicITSSize: UInt64 = 0x2_0000
    /// The most vCPUs Cloud Hypervisor accepts on arm64 (`MAX_SUPPORTED_CPUS` there).
    public static let maxVCPUs = 255

    // MARK: Legacy devices

    /// Start of the legacy device space (the PL011 is first).
    public static let legacyDevicesStart = GuestAddress(0x0900_0000)
    /// The PL011 UART's registers.
    public static let pl011Start = GuestAddress(0x0900_0000)
    /// The PL031 RTC's registers.
    public static let pl031Start = GuestAddress(0x0901_0000)
    /// The PL061 GPIO controller's registers.
    public static let pl061Start = GuestAddress(0x0902_0000)
    /// The MMIO size of each legacy device (one 4 KiB page).
    public static let legacyDeviceSize: UInt64 = 0x1000
    /// End of the legacy device space (exclusive).
    public static let legacyDevicesEnd = GuestAddress(0x0905_0000)

    // MARK: PCI

    /// Start of the PCI I/O window (arm64 has no port I/O; the window maps it to MMIO).
    public static let pciIOStart = GuestAddress(0x0905_0000)
    /// Size of the PCI I/O window.
    public static let pciIOSize: UInt64 = 0x1_0000
    /// Start of the 32-bit device MMIO window (PCI BARs below 4 GiB).
    public static let mem32BitDevicesStart = GuestAddress(0x1000_0000)
    /// Size of the 32-bit device MMIO window (512 MiB).
    public static let mem32BitDevicesSize: UInt64 = 0x2000_0000
    /// Start of the PCI ECAM (MMCONFIG) space.
    public static let pciMMConfigStart = GuestAddress(0x3000_0000)
    /// Size of the PCI ECAM space (256 MiB).
    public static let pciMMConfigSize: UInt64 = 256 << 20
    /// ECAM size of one PCI segment: bus 0 only, 32 devices x 8 functions x 4 KiB.
    public static let pciMMConfigSizePerSegment: UInt64 = 4096 * 256
    /// The lowest base the device tree gives the 64-bit PCI MMIO window (EDK2 wants it
    /// above 4 GiB; Cloud Hypervisor cuts the window off below 8 GiB in the FDT).
    public static let pciHighBase = GuestAddress(0x2_0000_0000)

    // MARK: RAM

    /// Start of RAM.
    public static let ramStart = GuestAddress(0x4000_0000)
    /// Start of the 32-bit reserved hole below 4 GiB (no RAM).
    public static let mem32BitReservedStart = GuestAddress(0xFC00_0000)
    /// Size of the 32-bit reserved hole (64 MiB).
    public static let mem32BitReservedSize: UInt64 = 0x0400_0000
    /// The TPM CRB interface, inside the reserved hole.
    public static let tpmStart = GuestAddress(0xFED4_0000)
    /// Size of the TPM CRB interface.
    public static let tpmSize: UInt64 = 0x1000
    /// Start of RAM above the hole.
    public static let ram64BitStart = GuestAddress(0x1_0000_0000)
    /// The largest kernel command line with its NUL (`COMMAND_LINE_SIZE` in arm64's `setup.h`).
    public static let cmdlineMaxSize = 2048

    /// Where the device tree blob goes: the start of RAM.
    public static let fdtStart = ramStart
    /// The largest device tree blob an arm64 kernel maps (2 MiB, `Documentation/arm64/booting.rst`).
    public static let fdtMaxSize: UInt64 = 0x20_0000
    /// Where the ACPI tables go, above the FDT.
    public static let acpiStart = GuestAddress(0x4000_0000 + 0x20_0000)
    /// Room for the ACPI tables (2 MiB).
    public static let acpiMaxSize: UInt64 = 0x20_0000
    /// The 2 MiB-aligned base the kernel `Image` is loaded at (plus its `text_offset`).
    public static let kernelStart = GuestAddress(0x4000_0000 + 0x40_0000)

    // MARK: Interrupts

    /// The first SPI: interrupt IDs below are SGIs (0-15) and PPIs (16-31).
    public static let irqBase: UInt32 = 32
    /// Interrupt IDs the vGIC is created with (SGIs, PPIs and SPIs).
    public static let irqCount: UInt32 = 256

    // MARK: Planners

    /// The GIC redistributor region for `vcpuCount` vCPUs: one frame each, ending at the
    /// distributor. vCPU `n` owns `[start + n * gicRedistributorSizePerVCPU, ...)`.
    public static func gicRedistributorRegion(vcpuCount: Int) throws(AArch64Error) -> (start: GuestAddress, size: UInt64) {
        guard vcpuCount >= 1, vcpuCount <= maxVCPUs else { throw .invalidVCPUCount(count: vcpuCount, max: maxVCPUs) }
        let size = gicRedistributorSizePerVCPU * UInt64(vcpuCount)
        return (GuestAddress(gicDistributorStart.rawValue - size), size)
    }

    /// The GIC ITS frame for `vcpuCount` vCPUs: right below the redistributors.
    public static func gicITSRegion(vcpuCount: Int) throws(AArch64Error) -> (start: GuestAddress, size: UInt64) {
        let redistributors = try gicRedistributorRegion(vcpuCount: vcpuCount)
        return (GuestAddress(redistributors.start.rawValue - gicITSSize), gicITSSize)
    }

    /// The RAM regions of a guest with `size` bytes: from `ramStart` up to the reserved hole,
    /// the rest from 4 GiB.
    public static func ramRegions(size: UInt64) throws(AArch64Error) -> [(start: GuestAddress, size: UInt64)] {
        guard size > 0, size.isMultiple(of: 4096) else { throw .invalidRAMSize(size) }
        let lowCapacity = mem32BitReservedStart.rawValue - ramStart.rawValue
        if size <= lowCapacity { return [(ramStart, size)] }
        let high = size - lowCapacity
        guard high <= UInt64.max - ram64BitStart.rawValue + 1 else { throw .invalidRAMSize(size) }
        return [(ramStart, lowCapacity), (ram64BitStart, high)]
    }

    /// Where Cloud Hypervisor puts an initramfs of `size` bytes: at the top of the last RAM
    /// region ending at `ramEnd` (exclusive), its start page-aligned, and above `lowest`
    /// (the end of the kernel).
    public static func initramfsAddress(size: UInt64, ramEnd: GuestAddress, lowest: GuestAddress) throws(AArch64Error) -> GuestAddress {
        let rounded = (size + 4095) / 4096 * 4096
        guard size > 0, rounded >= size, ramEnd.rawValue >= rounded, ramEnd.rawValue - rounded >= lowest.rawValue else {
            throw .initramfsDoesNotFit(size: size, ramEnd: ramEnd.rawValue, lowest: lowest.rawValue)
        }
        return GuestAddress((ramEnd.rawValue - rounded) & ~4095)
    }
}
