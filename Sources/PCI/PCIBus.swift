import Synchronization

/// Where a BAR move goes: the VMM remaps the device's window (on the MMIO or port I/O
/// bus, and in KVM for directly mapped memory) from the old address to the new one.
///
/// Called by ``PCIBus`` from inside a guest configuration write, without the bus lock
/// held, before the device's own ``PCIDevice/barReprogrammed(_:)``. Implementations
/// report their own failures (a guest write has nobody to throw to).
public protocol PCIDeviceRelocation: Sendable {
    /// Moves `device`'s window for `change.index` from `change.oldAddress` to `change.newAddress`.
    func moveBAR(_ change: BARReprogram, of device: any PCIDevice)
}

/// One PCI bus (bus 0 of a segment): 32 device numbers, function 0 of each, with the
/// host bridge at device 0 by default.
///
/// Configuration accesses name a (bus, device, function, offset); anything but bus 0,
/// function 0 and a present device reads as all ones and ignores writes, as a real bus
/// where nobody claims the cycle. Thread-safe: the device table sits behind a lock that
/// is released before a device is called.
public final class PCIBus: Sendable {
    /// Device numbers per bus.
    public static let deviceCount = 32

    private let slots: Mutex<[(any PCIDevice)?]>
    /// Where BAR moves are sent, if anywhere.
    public let relocation: (any PCIDeviceRelocation)?

    /// Creates a bus.
    ///
    /// - Parameters:
    ///   - hostBridge: the device at device number 0 (pass `nil` for an empty bus).
    ///   - relocation: what moves BAR windows when the guest reprograms a BAR.
    public init(hostBridge: (any PCIDevice)? = PCIHostBridge(), relocation: (any PCIDeviceRelocation)? = nil) {
        var table = [(any PCIDevice)?](repeating: nil, count: Self.deviceCount)
        table[0] = hostBridge
        slots = Mutex(table)
        self.relocation = relocation
    }

    /// Plugs `device` in at device number `number`, or at the lowest free one.
    ///
    /// - Returns: the device number used.
    /// - Throws: ``PCIError/deviceNumberOutOfRange(_:)``, ``PCIError/deviceNumberInUse(number:existing:)``
    ///   or ``PCIError/busFull``.
    @discardableResult
    public func add(_ device: any PCIDevice, at number: Int? = nil) throws(PCIError) -> Int {
        try slots.withLock { (table: inout [(any PCIDevice)?]) throws(PCIError) -> Int in
            if let number {
                guard table.indices.contains(number) else { throw .deviceNumberOutOfRange(number) }
                if let existing = table[number] { throw .deviceNumberInUse(number: number, existing: existing.name) }
                table[number] = device
                return number
            }
            guard let free = table.firstIndex(where: { $0 == nil }) else { throw .busFull }
            table[free] = device
            return free
        }
    }

    /// Unplugs and returns the device at device number `number`.
    ///
    /// - Throws: ``PCIError/deviceNumberOutOfRange(_:)`` or ``PCIError/noDevice(number:)``.
    @discardableResult
    public func remove(at number: Int) throws(PCIError) -> any PCIDevice {
        try slots.withLock { (table: inout [(any PCIDevice)?]) throws(PCIError) -> any PCIDevice in
            guard table.indices.contains(number) else { throw .deviceNumberOutOfRange(number) }
            guard let device = table[number] else { throw .noDevice(number: number) }
            table[number] = nil
            return device
        }
    }

    /// The device at device number `number`, if any.
    public func device(at number: Int) -> (any PCIDevice)? {
        slots.withLock { $0.indices.contains(number) ? $0[number] : nil }
    }

    /// The device numbers in use, in order.
    public var deviceNumbers: [Int] {
        slots.withLock { table in table.indices.filter { table[$0] != nil } }
    }

    /// The device answering (bus, device, function), if any: only bus 0, function 0.
    private func target(bus: Int, device: Int, function: Int) -> (any PCIDevice)? {
        guard bus == 0, function == 0 else { return nil }
        return self.device(at: device)
    }

    /// Reads `size` bytes (1, 2 or 4, inside one dword) at configuration `offset` of
    /// (bus, device, function).
    ///
    /// - Returns: the value in the low `size` bytes; all ones for an absent function or
    ///   an invalid access.
    public func readConfig(bus: Int, device: Int, function: Int, offset: Int, size: Int) -> UInt32 {
        guard size == 1 || size == 2 || size == 4, offset >= 0, offset < PCIConfiguration.extendedSize,
            (offset & 3) + size <= 4, let target = target(bus: bus, device: device, function: function)
        else { return PCIConfiguration.allOnes(size: size) }
        let shift = UInt32(offset & 3) * 8
        return (target.readConfigRegister(offset / 4) >> shift) & PCIConfiguration.allOnes(size: size)
    }

    /// Writes the low `size` bytes of `value` at configuration `offset` of (bus, device,
    /// function); ignored for an absent function or an invalid access. A BAR move goes
    /// to ``relocation`` and then to the device's ``PCIDevice/barReprogrammed(_:)``.
    public func writeConfig(bus: Int, device: Int, function: Int, offset: Int, size: Int, value: UInt32) {
        guard size == 1 || size == 2 || size == 4, offset >= 0, offset < PCIConfiguration.extendedSize,
            (offset & 3) + size <= 4, let target = target(bus: bus, device: device, function: function)
        else { return }
        let data = value & PCIConfiguration.allOnes(size: size)
        guard let change = target.writeConfigRegister(offset / 4, offset: offset & 3, size: size, value: data) else { return }
        relocation?.moveBAR(change, of: target)
        target.barReprogrammed(change)
    }
}

/// A PCI segment (domain): a segment number, its bus and the guest-physical window of
/// its ECAM configuration space, as Cloud Hypervisor's `PciSegment`. Cloud Hypervisor
/// gives each segment one bus, hence a 1 MiB ECAM window (``ecamSizePerBus``).
public final class PCISegment: Sendable {
    /// The ECAM bytes one bus takes: 32 devices x 8 functions x 4 KiB.
    public static let ecamSizePerBus: UInt64 = 1 << 20

    /// The segment number (the MCFG entry's PCI segment group).
    public let id: UInt16
    /// The segment's bus 0.
    public let bus: PCIBus
    /// The guest-physical base of the segment's ECAM window.
    public let ecamBase: UInt64
    /// The decoder to map on the MMIO bus at ``ecamBase`` for ``ecamSize`` bytes.
    public let ecam: PCIConfigMMIO

    /// Creates a segment.
    ///
    /// - Parameters:
    ///   - id: the segment number.
    ///   - ecamBase: where the VMM maps the segment's ECAM window.
    ///   - bus: the segment's bus (a fresh bus with a host bridge by default).
    public init(id: UInt16, ecamBase: UInt64, bus: PCIBus = PCIBus()) {
        self.id = id
        self.ecamBase = ecamBase
        self.bus = bus
        ecam = PCIConfigMMIO(bus: bus, name: "pci-ecam-\(id)")
    }

    /// The size of the ECAM window (one bus).
    public var ecamSize: UInt64 { Self.ecamSizePerBus }

    /// The ECAM base Cloud Hypervisor's layout gives segment `id`: consecutive 1 MiB
    /// windows from `windowBase`.
    public static func ecamBase(forSegment id: UInt16, windowBase: UInt64) -> UInt64 {
        windowBase + UInt64(id) * ecamSizePerBus
    }
}

/// The PCI segments of a VM, by segment number.
public struct PCISegmentTable: Sendable {
    /// The segments, in the order they were added (segment 0 first by convention).
    public private(set) var segments: [PCISegment] = []

    /// Creates an empty table.
    public init() {}

    /// Adds `segment`.
    ///
    /// - Throws: ``PCIError/duplicateSegment(id:)`` when its number is taken.
    public mutating func add(_ segment: PCISegment) throws(PCIError) {
        guard !segments.contains(where: { $0.id == segment.id }) else { throw .duplicateSegment(id: segment.id) }
        segments.append(segment)
    }

    /// The segment numbered `id`, if any.
    public func segment(_ id: UInt16) -> PCISegment? {
        segments.first { $0.id == id }
    }
}
