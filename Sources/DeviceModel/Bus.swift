import Synchronization

/// One device's place on a ``Bus``: the addresses it covers and the device itself.
public struct BusMapping: Sendable {
    /// The first address the device answers.
    public let base: UInt64
    /// How many consecutive addresses the device answers (at least 1).
    public let length: UInt64
    /// The device that answers accesses to `base ..< base + length`.
    public let device: any BusDevice

    /// The last address the device answers (inclusive, so a mapping may end at `UInt64.max`).
    public var last: UInt64 { base + (length - 1) }

    /// Whether `address` falls inside this mapping.
    public func contains(_ address: UInt64) -> Bool {
        address >= base && address - base < length
    }
}

/// An address space (port I/O or MMIO) that routes guest accesses to devices.
///
/// The VMM keeps one bus for port I/O and another for MMIO; a vCPU exit for an access
/// at `address` calls ``read(address:size:)`` or ``write(address:size:value:)``, which
/// find the device whose range holds `address` by binary search and pass it the offset
/// from the range's base. The access is delivered whole even when `address + size`
/// runs past the end of the range; devices decode `offset`/`size` themselves.
///
/// Thread-safe: the range table sits behind a `Mutex`, held only while looking up a
/// device, so accesses to different devices from different vCPUs run in parallel and
/// a device may be inserted or removed while the guest runs.
public final class Bus: Sendable {
    /// The bus's name in errors (for example `"I/O port bus"` or `"MMIO bus"`).
    public let name: String
    /// The mappings, sorted by base address and never overlapping.
    private let table = Mutex<[BusMapping]>([])

    /// Creates an empty bus called `name`.
    public init(name: String) {
        self.name = name
    }

    /// Every mapping on the bus, sorted by base address.
    public var mappings: [BusMapping] {
        table.withLock { $0 }
    }

    /// Maps `device` at the `length` addresses starting at `base`.
    ///
    /// - Throws: ``BusError/zeroLength(bus:base:device:)`` for a zero `length`,
    ///   ``BusError/rangeOverflow(bus:base:length:device:)`` when the range would run past
    ///   `UInt64.max`, or ``BusError/overlap(bus:newFirst:newLast:newDevice:existingFirst:existingLast:existingDevice:)``
    ///   naming the first device already mapped inside the range.
    public func insert(_ device: any BusDevice, base: UInt64, length: UInt64) throws(BusError) {
        guard length > 0 else {
            throw .zeroLength(bus: name, base: base, device: device.name)
        }
        let (last, overflow) = base.addingReportingOverflow(length - 1)
        guard !overflow else {
            throw .rangeOverflow(bus: name, base: base, length: length, device: device.name)
        }
        let mapping = BusMapping(base: base, length: length, device: device)
        let busName = name
        try table.withLock { (entries: inout [BusMapping]) throws(BusError) in
            // Index of the first entry whose base is above `base`: the new entry goes there.
            let index = Self.firstIndex(in: entries, withBaseAbove: base)
            // The entry just below may reach into the new range...
            if index > 0, entries[index - 1].last >= base {
                throw Self.overlapError(busName, mapping, entries[index - 1])
            }
            // ...and the entry just above may start inside it.
            if index < entries.count, entries[index].base <= last {
                throw Self.overlapError(busName, mapping, entries[index])
            }
            entries.insert(mapping, at: index)
        }
    }

    /// Unmaps the device whose range starts exactly at `base` and returns it.
    ///
    /// - Throws: ``BusError/notMapped(bus:base:)`` when no range starts at `base`.
    @discardableResult
    public func remove(base: UInt64) throws(BusError) -> any BusDevice {
        let busName = name
        return try table.withLock { (entries: inout [BusMapping]) throws(BusError) -> any BusDevice in
            let index = Self.firstIndex(in: entries, withBaseAbove: base)
            guard index > 0, entries[index - 1].base == base else {
                throw .notMapped(bus: busName, base: base)
            }
            return entries.remove(at: index - 1).device
        }
    }

    /// Finds the device whose range holds `address`.
    ///
    /// - Returns: the device and `address`'s offset from the start of its range, or `nil`
    ///   when no device covers `address`.
    public func resolve(_ address: UInt64) -> (device: any BusDevice, offset: UInt64)? {
        table.withLock { entries in
            let index = Self.firstIndex(in: entries, withBaseAbove: address)
            guard index > 0 else { return nil }
            let candidate = entries[index - 1]
            guard candidate.contains(address) else { return nil }
            return (candidate.device, address - candidate.base)
        }
    }

    /// Reads `size` bytes at `address` from the device mapped there.
    ///
    /// - Returns: the device's value masked to `size` bytes, or `nil` when no device covers
    ///   `address` or `size` is not between 1 and 8.
    public func read(address: UInt64, size: Int) -> UInt64? {
        guard (1...8).contains(size), let (device, offset) = resolve(address) else { return nil }
        return device.read(offset: offset, size: size) & Self.mask(size: size)
    }

    /// Writes the low `size` bytes of `value` at `address` to the device mapped there.
    ///
    /// - Returns: `false` when no device covers `address` or `size` is not between 1 and 8,
    ///   in which case nothing happened.
    @discardableResult
    public func write(address: UInt64, size: Int, value: UInt64) -> Bool {
        guard (1...8).contains(size), let (device, offset) = resolve(address) else { return false }
        device.write(offset: offset, size: size, value: value & Self.mask(size: size))
        return true
    }

    /// Reads like real hardware: an access nobody decodes floats the data lines high.
    ///
    /// - Returns: the device's value, or ``allOnes(size:)`` when ``read(address:size:)``
    ///   returns `nil`.
    public func readOrAllOnes(address: UInt64, size: Int) -> UInt64 {
        read(address: address, size: size) ?? Self.allOnes(size: size)
    }

    /// The value an unmapped read of `size` bytes returns: every bit of the low `size`
    /// bytes set (`0xff` for one byte, `0xffff_ffff` for four). Sizes above 8 give all
    /// 64 bits; sizes below 1 give 0.
    public static func allOnes(size: Int) -> UInt64 {
        mask(size: size)
    }

    /// A mask of the low `size` bytes (clamped to 0...8 bytes).
    public static func mask(size: Int) -> UInt64 {
        if size >= 8 { return .max }
        if size <= 0 { return 0 }
        return (1 << (UInt64(size) * 8)) - 1
    }

    /// Binary search: the index of the first entry whose base is greater than `address`
    /// (`entries.count` when there is none).
    private static func firstIndex(in entries: [BusMapping], withBaseAbove address: UInt64) -> Int {
        var low = 0
        var high = entries.count
        while low < high {
            let middle = low + (high - low) / 2
            if entries[middle].base <= address {
                low = middle + 1
            } else {
                high = middle
            }
        }
        return low
    }

    /// The overlap error for `new` clashing with `existing` on the bus named `bus`.
    private static func overlapError(_ bus: String, _ new: BusMapping, _ existing: BusMapping) -> BusError {
        .overlap(
            bus: bus, newFirst: new.base, newLast: new.last, newDevice: new.device.name,
            existingFirst: existing.base, existingLast: existing.last, existingDevice: existing.device.name)
    }
}
