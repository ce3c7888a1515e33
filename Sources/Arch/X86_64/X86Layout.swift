import GuestMemory

/// The x86-64 guest physical address map, as Cloud Hypervisor lays it out, and the RAM and
/// E820 planners built on it.
///
/// ```text
/// 0x0000_0000  low RAM (640 KiB): boot GDT/IDT, PVH start info, zero page, stack,
///              page tables, command line, MP table in the last KiB
/// 0x000A_0000  EBDA / legacy area (RSDP at its start, SMBIOS at 0xF0000), not RAM in E820
/// 0x0010_0000  high RAM: the kernel loads here; RAM runs up to 3 GiB
/// 0xC000_0000  32-bit hole (1 GiB, no RAM): 640 MiB of 32-bit device MMIO, PCI MMCONFIG
///              (256 MiB at 0xE800_0000), KVM's TSS and identity map, IOAPIC, LAPIC
/// 0x1_0000_0000  RAM above 4 GiB, as much as the guest has beyond 3 GiB
/// end of RAM     64-bit device area (the PCI host bridge's 64-bit MMIO window, where
///                virtio-pmem ranges go), from the end of RAM (4 GiB at least) up to the
///                top of the guest's physical address space, less 1 MiB + 64 KiB
/// ```
///
/// The name avoids Swift's own `MemoryLayout`.
public enum X86Layout {
    // MARK: Low RAM [0, 640 KiB)

    /// Start of low RAM.
    public static let lowRAMStart = GuestAddress(0)
    /// The BIOS data area word holding the EBDA segment (ACPICA looks for the EBDA there).
    public static let ebdaPointer = GuestAddress(0x40E)
    /// The boot GDT (four 8-byte descriptors).
    public static let bootGDTStart = GuestAddress(0x500)
    /// The boot IDT (one null 8-byte entry: any exception before the guest sets its own IDT
    /// becomes a triple fault).
    public static let bootIDTStart = GuestAddress(0x520)
    /// The PVH `hvm_start_info` structure; `rbx` points here at a PVH entry.
    public static let pvhInfoStart = GuestAddress(0x6000)
    /// The PVH module list (`hvm_modlist_entry` array, the initramfs), right after the start info.
    public static let pvhModlistStart = GuestAddress(0x6040)
    /// The PVH memory map (`hvm_memmap_table_entry` array). It shares its page with the zero
    /// page: the two boot protocols are never used together.
    public static let pvhMemmapStart = GuestAddress(0x7000)
    /// The Linux zero page (`boot_params`, 4 KiB); `rsi` points here at a 64-bit Linux entry.
    public static let zeroPageStart = GuestAddress(0x7000)
    /// The bottom of the boot stack page.
    public static let bootStackStart = GuestAddress(0x8000)
    /// The initial stack pointer (and frame pointer) of the boot vCPU.
    public static let bootStackPointer = GuestAddress(0x8FF0)
    /// The identity-mapping PML4 page for a 64-bit entry.
    public static let pml4Start = GuestAddress(0x9000)
    /// The identity-mapping page-directory-pointer table.
    public static let pdpteStart = GuestAddress(0xA000)
    /// The identity-mapping page directory (512 entries of 2 MiB: the first 1 GiB).
    public static let pdeStart = GuestAddress(0xB000)
    /// The kernel command line.
    public static let cmdlineStart = GuestAddress(0x20000)
    /// The room reserved for the command line at `cmdlineStart` (64 KiB). The kernel's own
    /// limit is usually smaller; see `KernelCmdline.defaultMaxSize`.
    public static let cmdlineAreaSize: UInt64 = 0x10000
    /// The MP floating pointer and configuration table: the last KiB of base memory
    /// (639 KiB), one of the places the MP specification tells the OS to search.
    public static let mpTableStart = GuestAddress(0x9FC00)

    // MARK: EBDA and legacy area [640 KiB, 1 MiB)

    /// Start of the EBDA / legacy BIOS area; E820 reports RAM only below it.
    public static let ebdaStart = GuestAddress(0xA0000)
    /// Where the ACPI RSDP goes (the first bytes of the EBDA, searched by the guest).
    public static let rsdpPointer = GuestAddress(0xA0000)
    /// The first place the SMBIOS specification allows its entry point.
    public static let smbiosStart = GuestAddress(0xF0000)

    // MARK: High RAM [1 MiB, 3 GiB)

    /// Start of high RAM, where kernels are loaded (0x100000).
    public static let highRAMStart = GuestAddress(0x100000)

    // MARK: The 32-bit hole [3 GiB, 4 GiB)

    /// Start of the 32-bit reserved area: RAM stops here and resumes at 4 GiB.
    public static let mem32BitReservedStart = GuestAddress(0xC000_0000)
    /// The size of the hole in RAM below 4 GiB (1 GiB): everything from
    /// `mem32BitReservedStart` up to `ram64BitStart`.
    public static let ramHoleSize: UInt64 = 1 << 30
    /// Start of the 32-bit device MMIO window (BARs of 32-bit PCI devices).
    public static let mem32BitDevicesStart = GuestAddress(0xC000_0000)
    /// Size of the 32-bit device MMIO window (640 MiB).
    public static let mem32BitDevicesSize: UInt64 = 640 << 20
    /// Start of the PCI MMCONFIG (ECAM) area, right after the device window.
    public static let pciMMConfigStart = GuestAddress(0xE800_0000)
    /// Size of the PCI MMCONFIG area (256 MiB: 256 buses of 1 MiB).
    public static let pciMMConfigSize: UInt64 = 256 << 20
    /// ECAM space per PCI segment (one bus: 32 devices x 8 functions x 4 KiB).
    public static let pciMMConfigSizePerSegment: UInt64 = 4096 * 256
    /// Cloud Hypervisor's 32-bit reserved size: the device window plus MMCONFIG (896 MiB).
    public static let mem32BitReservedSize: UInt64 = mem32BitDevicesSize + pciMMConfigSize
    /// KVM's TSS (three pages), right after MMCONFIG (`KVM_SET_TSS_ADDR`).
    public static let kvmTSSStart = GuestAddress(0xF800_0000)
    /// Size of KVM's TSS area (12 KiB).
    public static let kvmTSSSize: UInt64 = 3 * 4096
    /// KVM's identity-map page, right after the TSS (`KVM_SET_IDENTITY_MAP_ADDR`).
    public static let kvmIdentityMapStart = GuestAddress(0xF800_3000)
    /// Size of KVM's identity-map area (one page).
    public static let kvmIdentityMapSize: UInt64 = 4096
    /// The IOAPIC's MMIO registers.
    public static let ioapicStart = GuestAddress(0xFEC0_0000)
    /// Size of the IOAPIC's MMIO window.
    public static let ioapicSize: UInt64 = 0x20
    /// The TPM CRB interface window.
    public static let tpmStart = GuestAddress(0xFED4_0000)
    /// Size of the TPM CRB window.
    public static let tpmSize: UInt64 = 0x1000
    /// The local APIC's MMIO registers (the architectural default base).
    public static let apicStart = GuestAddress(0xFEE0_0000)

    // MARK: RAM above 4 GiB

    /// Where RAM continues above the hole (4 GiB).
    public static let ram64BitStart = GuestAddress(0x1_0000_0000)

    // MARK: The 64-bit device area

    /// What Cloud Hypervisor leaves unused at the very top of the guest-physical address
    /// space (64 KiB: Linux mishandles a device at the last page, Windows wants 64 KiB alignment).
    public static let addressSpaceTopGap: UInt64 = 1 << 16
    /// Cloud Hypervisor's platform device area (1 MiB), just below that gap, kept out of the
    /// 64-bit PCI window.
    public static let platformDeviceAreaSize: UInt64 = 1 << 20
    /// The alignment of the end of RAM when memory hotplug room is kept (128 MiB).
    public static let memoryHotplugAlignment: UInt64 = 128 << 20

    /// The 64-bit device area as Cloud Hypervisor's memory manager places it, which is the
    /// 64-bit MMIO window of PCI segment 0 (Cloud Hypervisor's `start_of_device_area` to
    /// `end_of_device_area`):
    ///
    /// - it starts right after RAM; with `hotplugSize` (memory hotplug room) the end of RAM
    ///   is first rounded up to 128 MiB and the room follows (for virtio-mem the room starts
    ///   128 MiB-aligned); a guest whose RAM ends below the 32-bit hole gets 4 GiB;
    /// - it ends `platformDeviceAreaSize + addressSpaceTopGap` below `2^physicalAddressBits`.
    ///
    /// - Parameters:
    ///   - ramEnd: the end (exclusive) of the highest RAM region.
    ///   - hotplugSize: the memory hotplug room (`--memory hotplug_size=`), if any.
    ///   - virtioMem: whether the room is for virtio-mem rather than ACPI hotplug.
    ///   - physicalAddressBits: the guest's physical address width (CPUID 0x8000_0008 EAX[7:0]).
    /// - Returns: the window's base and size.
    /// - Throws: `ArchError.noDeviceArea` when nothing is left between the two.
    public static func deviceArea(ramEnd: UInt64, hotplugSize: UInt64? = nil, virtioMem: Bool = false,
                                  physicalAddressBits: UInt8) throws(ArchError) -> (base: UInt64, size: UInt64) {
        let bits = min(physicalAddressBits, 63)
        let top = (UInt64(1) << bits) - addressSpaceTopGap - platformDeviceAreaSize  // exclusive
        guard ramEnd > 0 else { throw .noDeviceArea(start: 0, end: top, bits: bits) }
        let lastRAMByte = ramEnd - 1
        var start: UInt64
        if lastRAMByte < mem32BitReservedStart.rawValue {
            start = ram64BitStart.rawValue
        } else if hotplugSize != nil {
            start = (lastRAMByte | (memoryHotplugAlignment - 1)) &+ 1
        } else {
            start = ramEnd
        }
        if let hotplugSize {
            if virtioMem { start = (start &+ memoryHotplugAlignment - 1) & ~(memoryHotplugAlignment - 1) }
            let (sum, overflow) = start.addingReportingOverflow(hotplugSize)
            guard !overflow else { throw .noDeviceArea(start: UInt64.max, end: top, bits: bits) }
            start = sum
        }
        guard start != 0, start < top else { throw .noDeviceArea(start: start, end: top, bits: bits) }
        return (start, top - start)
    }

    // MARK: Planning

    /// The guest RAM regions for `size` bytes of memory: everything below 3 GiB from address
    /// 0, the rest from 4 GiB, skipping the 32-bit hole.
    ///
    /// - Throws: `ArchError.invalidRAMSize` for 0 bytes or a size whose top would pass the
    ///   64-bit address space.
    public static func ramRegions(size: UInt64) throws(ArchError) -> [(GuestAddress, UInt64)] {
        let below = mem32BitReservedStart.rawValue
        guard size > 0 else { throw .invalidRAMSize(size) }
        if size <= below { return [(lowRAMStart, size)] }
        let above = size - below
        guard ram64BitStart.checkedAdd(above) != nil else { throw .invalidRAMSize(size) }
        return [(lowRAMStart, below), (ram64BitStart, above)]
    }

    /// The E820 memory map Cloud Hypervisor gives a guest with these RAM regions (in any
    /// order; contiguous ones are merged first):
    ///
    /// 1. RAM `[0, 640 KiB)`,
    /// 2. RAM from 1 MiB to the end of the first region (which must start at 0, pass 1 MiB
    ///    and stay below the hole),
    /// 3. every further region as RAM,
    /// 4. the PCI MMCONFIG area as reserved.
    ///
    /// - Throws: `ArchError.unexpectedRAMLayout` when the first region does not have that shape.
    public static func e820Entries(ramRegions: [(GuestAddress, UInt64)]) throws(ArchError) -> [E820Entry] {
        let merged = mergeContiguous(ramRegions)
        guard let first = merged.first else { throw .unexpectedRAMLayout(start: 0, end: 0) }
        let (firstEnd, overflow) = first.start.addingReportingOverflow(first.size)
        guard !overflow, first.start <= highRAMStart.rawValue, firstEnd > highRAMStart.rawValue,
              firstEnd <= mem32BitReservedStart.rawValue else {
            throw .unexpectedRAMLayout(start: first.start, end: firstEnd)
        }
        var entries = [E820Entry(address: 0, size: ebdaStart.rawValue, type: .ram)]
        entries.append(E820Entry(address: highRAMStart.rawValue, size: firstEnd - highRAMStart.rawValue, type: .ram))
        for region in merged.dropFirst() {
            entries.append(E820Entry(address: region.start, size: region.size, type: .ram))
        }
        entries.append(E820Entry(address: pciMMConfigStart.rawValue, size: pciMMConfigSize, type: .reserved))
        return entries
    }

    /// The E820 map for the regions of `memory` (see `e820Entries(ramRegions:)`).
    public static func e820Entries(memory: GuestMemory) throws(ArchError) -> [E820Entry] {
        try e820Entries(ramRegions: memory.regions.map { ($0.start, $0.size) })
    }

    /// The end (exclusive) of the RAM that starts at address 0 and runs without a gap, capped
    /// at the 32-bit hole: the top of the memory a 32-bit boot structure or initramfs may use.
    public static func lowRAMEnd(memory: GuestMemory) -> UInt64 {
        let merged = mergeContiguous(memory.regions.map { ($0.start, $0.size) })
        guard let first = merged.first, first.start == 0 else { return 0 }
        return min(first.start + first.size, mem32BitReservedStart.rawValue)
    }

    /// Sorts regions and joins those that touch, dropping empty ones.
    static func mergeContiguous(_ regions: [(GuestAddress, UInt64)]) -> [(start: UInt64, size: UInt64)] {
        var merged: [(start: UInt64, size: UInt64)] = []
        for (start, size) in regions.sorted(by: { $0.0 < $1.0 }) where size > 0 {
            if let last = merged.last, case let (end, false) = last.start.addingReportingOverflow(last.size),
               end == start.rawValue {
                merged[merged.count - 1].size += size
            } else {
                merged.append((start.rawValue, size))
            }
        }
        return merged
    }
}
