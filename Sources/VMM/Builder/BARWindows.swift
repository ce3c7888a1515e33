import PCI
import VirtioDevices
import VMAllocator

/// Where one device's BARs and 64-bit ranges were placed, as a snapshot records it (Cloud
/// Hypervisor's device-tree `resources`): a restore or a migration's destination puts the
/// device at the same addresses whatever order it is built in (a hot-added device is built
/// with the boot ones there).
struct DevicePlacement: Codable, Equatable, Sendable {
    /// One BAR as it was allocated (not where the guest may have moved it since: the
    /// device's configuration space state carries that).
    struct BAR: Codable, Equatable, Sendable {
        /// The register index.
        var index: Int
        /// `mmio32` or `mmio64`, Cloud Hypervisor's `PciBarType` names.
        var type: String
        /// The allocated address.
        var base: UInt64
        /// The size in bytes.
        var size: UInt64

        /// The kind the type names, or nil for an unknown one.
        var kind: PCIBARKind? {
            switch type {
            case "mmio32": .memory32
            case "mmio64": .memory64
            default: nil
            }
        }

        /// The record of `bar`.
        init(_ bar: PCIBAR) {
            index = bar.index
            type = bar.kind == .memory64 ? "mmio64" : bar.kind == .memory32 ? "mmio32" : "io"
            base = bar.address
            size = bar.size
        }
    }

    /// The BARs.
    var bars: [BAR]
    /// A range of the segment's 64-bit window besides the BARs (a pmem device's memory) as (base, size).
    var range64: [UInt64]?

    enum CodingKeys: String, CodingKey { case bars, range64 = "range64" }
}

/// One PCI segment's BAR windows: its share of the 32-bit device window and of the 64-bit
/// device area above RAM (which also holds pmem ranges: one allocator for both, as Cloud
/// Hypervisor's `mem64_allocator`).
struct BARWindows: Sendable {
    /// The 32-bit window.
    var mmio32: AddressAllocator
    /// The 64-bit window (nil for a machine without one).
    var mmio64: AddressAllocator?

    /// A 64-bit BAR's alignment, Cloud Hypervisor's `VIRTIO_PCI_BAR_ALIGN` (8 MiB).
    static let bar64Alignment: UInt64 = 0x80_0000

    /// Cloud Hypervisor's `use_64bit_bar_for_virtio_device`: every virtio device gets a 64-bit
    /// BAR from its segment's 64-bit window but a virtio-blk disk present at boot on segment 0,
    /// which stays in the 32-bit window (firmware reads boot disks without mapping high addresses).
    static func uses64BitBAR(deviceType: VirtioDeviceType, segment: UInt16, hotplug: Bool) -> Bool {
        segment > 0 || deviceType != .block || hotplug
    }

    /// Allocates a virtio-pci BAR of `size` bytes: at `saved`'s address and kind when given (a
    /// restore), else from the 64-bit window (the highest 8 MiB-aligned free address, as Cloud
    /// Hypervisor's allocator goes top-down) when `use64Bit`, or from the 32-bit window
    /// (aligned to its size).
    ///
    /// - Returns: the BAR (index `index`, not prefetchable, as Cloud Hypervisor marks it).
    /// - Throws: `VMMError` naming the window when it has no room or the saved address is taken.
    mutating func allocateBAR(index: Int, size: UInt64, use64Bit: Bool, saved: DevicePlacement.BAR? = nil) throws -> PCIBAR {
        let kind: PCIBARKind = saved.map { $0.kind ?? .io } ?? (use64Bit ? .memory64 : .memory32)
        switch kind {
        case .memory64:
            guard var window = mmio64 else {
                throw VMMError(description: "this PCI segment has no 64-bit window for a 64-bit BAR")
            }
            defer { mmio64 = window }
            let range = if let saved {
                try window.allocate(at: saved.base, size: size)
            } else {
                try window.allocate(size: size, alignment: Self.bar64Alignment, policy: .lastFit)
            }
            return PCIBAR(index: index, kind: .memory64, size: size, address: range.start)
        case .memory32:
            let range = if let saved {
                try mmio32.allocate(at: saved.base, size: size)
            } else {
                try mmio32.allocate(size: size, alignment: size)
            }
            return PCIBAR(index: index, kind: .memory32, size: size, address: range.start)
        case .io:
            throw VMMError(description: "a saved BAR of type '\(saved?.type ?? "?")' cannot be placed: a virtio-pci BAR is mmio32 or mmio64")
        }
    }

    /// Gives back `bar`'s allocation to the window it came from; false when neither holds it.
    @discardableResult
    mutating func free(_ bar: PCIBAR) -> Bool {
        if bar.kind == .memory64 {
            guard var window = mmio64 else { return false }
            defer { mmio64 = window }
            return (try? window.free(at: bar.address)) != nil
        }
        return (try? mmio32.free(at: bar.address)) != nil
    }
}
