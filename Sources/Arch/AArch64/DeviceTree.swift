import GuestMemory

/// An arm64 VM's device tree as Cloud Hypervisor writes it (`arch/src/aarch64/fdt.rs`):
/// memory, CPUs with their MPIDRs and PSCI, the GICv3 with its ITS, the architected timer,
/// the APB clock, PL011/PL031/PL061 with the power key, PCIe host bridges, `chosen`.
///
/// ```swift
/// var config = ARM64DeviceTree.Configuration(
///     memory: try AArch64Layout.ramRegions(size: 1 << 30),
///     mpidrs: (0..<4).map(ARM64DeviceTree.defaultMPIDR), commandLine: "console=ttyAMA0")
/// let blob = try ARM64DeviceTree.build(config)  // write it at AArch64Layout.fdtStart
/// ```
public enum ARM64DeviceTree {
    /// Phandles, as Cloud Hypervisor numbers them.
    public enum Phandle {
        /// The GIC (root `interrupt-parent`).
        public static let gic: UInt32 = 1
        /// The ITS (`msi-parent`, `msi-map`).
        public static let msi: UInt32 = 2
        /// The 24 MHz APB clock.
        public static let clock: UInt32 = 3
        /// The PL061 GPIO controller.
        public static let gpio: UInt32 = 4
        /// vCPU `n` has phandle `firstVCPU + n`.
        public static let firstVCPU: UInt32 = 8
    }

    /// The GIC maintenance interrupt (a PPI).
    public static let gicMaintenancePPI: UInt32 = 9
    /// The architected timer's PPIs: secure physical, non-secure physical, virtual, hypervisor.
    public static let timerPPIs: [UInt32] = [13, 14, 11, 10]
    /// The PMU's PPI.
    public static let pmuPPI: UInt32 = 7
    /// The GPIO line of the power button (Cloud Hypervisor's `gpios = <&gpio 3 0>`).
    public static let powerButtonGPIO: UInt32 = 3
    /// `KEY_POWER` from `linux/input-event-codes.h`.
    public static let keyPower: UInt32 = 116

    static let irqTypeSPI: UInt32 = 0
    static let irqTypePPI: UInt32 = 1
    static let irqEdgeRising: UInt32 = 1
    static let irqLevelHigh: UInt32 = 4

    /// A platform device at an MMIO address with its SPI (as a GIC interrupt ID, 32 and up).
    public struct PlatformDevice: Hashable, Sendable {
        /// The MMIO base.
        public var address: GuestAddress
        /// The MMIO size.
        public var size: UInt64
        /// The GIC interrupt ID (`AArch64Layout.irqBase` or more).
        public var irq: UInt32
        /// A device at `address` with `irq`, one 4 KiB page long by default.
        public init(address: GuestAddress, irq: UInt32, size: UInt64 = AArch64Layout.legacyDeviceSize) {
            self.address = address
            self.irq = irq
            self.size = size
        }
    }

    /// One PCI segment's host bridge.
    public struct PCISegment: Hashable, Sendable {
        /// The segment number (`linux,pci-domain`).
        public var id: UInt16
        /// The segment's ECAM base.
        public var ecamAddress: GuestAddress
        /// The 64-bit MMIO window for its BARs.
        public var mmio64Start: GuestAddress
        /// The 64-bit window's size.
        public var mmio64Size: UInt64
        /// A segment with an ECAM base and a 64-bit window.
        public init(id: UInt16, ecamAddress: GuestAddress, mmio64Start: GuestAddress, mmio64Size: UInt64) {
            self.id = id
            self.ecamAddress = ecamAddress
            self.mmio64Start = mmio64Start
            self.mmio64Size = mmio64Size
        }
    }

    /// One NUMA node (`numa-node-id` on its CPUs and memory, a row of the `distance-map`):
    /// written only when the configuration has two nodes or more, as Cloud Hypervisor does.
    public struct NUMANode: Sendable {
        /// The node id.
        public var id: UInt32
        /// Its vCPUs, as indices into `Configuration.mpidrs`.
        public var vcpus: [Int]
        /// Its RAM: ranges inside the configuration's `memory`, no range in two nodes.
        public var memory: [(start: GuestAddress, size: UInt64)]
        /// Distances to other nodes by id (11-255); a missing one is taken from the other
        /// node's entry for this one, else 20. The distance to itself is 10.
        public var distances: [UInt32: UInt8]
        /// A node.
        public init(id: UInt32, vcpus: [Int], memory: [(start: GuestAddress, size: UInt64)], distances: [UInt32: UInt8] = [:]) {
            self.id = id
            self.vcpus = vcpus
            self.memory = memory
            self.distances = distances
        }
    }

    /// Everything the tree describes.
    public struct Configuration: Sendable {
        /// RAM regions (`AArch64Layout.ramRegions`).
        public var memory: [(start: GuestAddress, size: UInt64)]
        /// Each vCPU's MPIDR_EL1, in vCPU order.
        public var mpidrs: [UInt64]
        /// The kernel command line (`chosen/bootargs`).
        public var commandLine: String
        /// The initramfs's guest range, if any.
        public var initramfs: (start: GuestAddress, size: UInt64)?
        /// Whether to describe the PMU.
        public var pmu: Bool = false
        /// The PL011 UART, the `stdout-path`.
        public var serial: PlatformDevice? = PlatformDevice(address: AArch64Layout.pl011Start, irq: 33)
        /// The PL031 RTC.
        public var rtc: PlatformDevice? = PlatformDevice(address: AArch64Layout.pl031Start, irq: 34)
        /// The PL061 GPIO controller with the power key.
        public var gpio: PlatformDevice? = PlatformDevice(address: AArch64Layout.pl061Start, irq: 35)
        /// The PCI host bridges.
        public var pciSegments: [PCISegment] = []
        /// The NUMA nodes; fewer than two means no NUMA description.
        public var numaNodes: [NUMANode] = []

        /// A configuration with the legacy devices at their default places and no PCI.
        public init(memory: [(start: GuestAddress, size: UInt64)], mpidrs: [UInt64], commandLine: String,
                    initramfs: (start: GuestAddress, size: UInt64)? = nil) {
            self.memory = memory
            self.mpidrs = mpidrs
            self.commandLine = commandLine
            self.initramfs = initramfs
        }
    }

    /// The MPIDR_EL1 KVM gives vCPU `index` by default (`reset_mpidr`): Aff0 = index % 16,
    /// Aff1 = (index / 16) % 256, Aff2 = (index / 4096) % 256, bit 31 set (RES1).
    public static func defaultMPIDR(_ index: Int) -> UInt64 {
        let id = UInt64(index)
        return (1 << 31) | (id & 0xF) | (((id >> 4) & 0xFF) << 8) | (((id >> 12) & 0xFF) << 16)
    }

    /// The device tree blob for `config`.
    public static func build(_ config: Configuration) throws(AArch64Error) -> [UInt8] {
        try validate(config)
        var fdt = FDTWriter()
        try fdt.beginNode("")
        try fdt.property("compatible", string: "linux,dummy-virt")
        try fdt.property("#address-cells", u32: 2)
        try fdt.property("#size-cells", u32: 2)
        try fdt.property("interrupt-parent", u32: Phandle.gic)
        let numa = config.numaNodes.count > 1 ? config.numaNodes.sorted { $0.id < $1.id } : []
        try writeCPUs(&fdt, config.mpidrs, numa: numa)
        if numa.isEmpty {
            for region in config.memory {
                try fdt.beginNode("memory@\(hexDigits(region.start.rawValue))")
                try fdt.property("device_type", string: "memory")
                try fdt.property("reg", cells64: [region.start.rawValue, region.size])
                try fdt.endNode()
            }
        } else {
            for node in numa where !node.memory.isEmpty {
                let ranges = node.memory.sorted { $0.start < $1.start }
                try fdt.beginNode("memory@\(hexDigits(ranges[0].start.rawValue))")
                try fdt.property("device_type", string: "memory")
                try fdt.property("reg", cells64: ranges.flatMap { [$0.start.rawValue, $0.size] })
                try fdt.property("numa-node-id", u32: node.id)
                try fdt.endNode()
            }
        }
        try writeChosen(&fdt, config)
        try writeGIC(&fdt, vcpuCount: config.mpidrs.count)
        try fdt.beginNode("timer")
        try fdt.property("compatible", string: "arm,armv8-timer")
        try fdt.property("always-on")
        try fdt.property("interrupts", cells: timerPPIs.flatMap { [irqTypePPI, $0, irqLevelHigh] })
        try fdt.endNode()
        if config.pmu {
            try fdt.beginNode("pmu")
            try fdt.property("compatible", string: "arm,armv8-pmuv3")
            try fdt.property("interrupts", cells: [irqTypePPI, pmuPPI, irqLevelHigh])
            try fdt.endNode()
        }
        try fdt.beginNode("apb-pclk")
        try fdt.property("compatible", string: "fixed-clock")
        try fdt.property("#clock-cells", u32: 0)
        try fdt.property("clock-frequency", u32: 24_000_000)
        try fdt.property("clock-output-names", string: "clk24mhz")
        try fdt.phandle(Phandle.clock)
        try fdt.endNode()
        try fdt.beginNode("psci")
        try fdt.property("compatible", strings: ["arm,psci-1.0", "arm,psci-0.2"])
        try fdt.property("method", string: "hvc")
        try fdt.endNode()
        try writeLegacyDevices(&fdt, config)
        for segment in config.pciSegments {
            try writePCI(&fdt, segment, segmentCount: config.pciSegments.count)
        }
        if !numa.isEmpty { try writeDistanceMap(&fdt, numa) }
        try fdt.endNode()
        let blob = try fdt.finish()
        guard UInt64(blob.count) <= AArch64Layout.fdtMaxSize else {
            throw .fdtTooLarge(size: blob.count, max: Int(AArch64Layout.fdtMaxSize))
        }
        return blob
    }

    /// The node path of the PL011 (`chosen/stdout-path`), or nil without one.
    public static func serialPath(_ config: Configuration) -> String? {
        config.serial.map { "/pl011@\(hexDigits($0.address.rawValue))" }
    }

    static func validate(_ config: Configuration) throws(AArch64Error) {
        guard !config.mpidrs.isEmpty, config.mpidrs.count <= AArch64Layout.maxVCPUs else {
            throw .invalidVCPUCount(count: config.mpidrs.count, max: AArch64Layout.maxVCPUs)
        }
        guard Set(config.mpidrs.map { $0 & 0xFF_FFFF }).count == config.mpidrs.count else {
            throw .invalidDeviceTreeConfiguration(reason: "two vCPUs share an MPIDR affinity")
        }
        guard !config.memory.isEmpty, config.memory.allSatisfy({ $0.size > 0 }) else {
            throw .invalidDeviceTreeConfiguration(reason: "the guest needs at least one non-empty RAM region")
        }
        guard !config.commandLine.utf8.contains(0), config.commandLine.utf8.count < AArch64Layout.cmdlineMaxSize else {
            throw .invalidDeviceTreeConfiguration(
                reason: "the command line must be under \(AArch64Layout.cmdlineMaxSize) bytes without NUL bytes")
        }
        for device in [config.serial, config.rtc, config.gpio].compactMap({ $0 })
            where device.irq < AArch64Layout.irqBase || device.irq >= AArch64Layout.irqCount {
            throw .invalidDeviceTreeConfiguration(
                reason: "interrupt \(device.irq) of the device at \(device.address) is not an SPI (32..<\(AArch64Layout.irqCount))")
        }
        if let initramfs = config.initramfs {
            let covered = config.memory.contains { region in
                guard initramfs.start >= region.start else { return false }
                let offset = initramfs.start.rawValue - region.start.rawValue
                return offset <= region.size && initramfs.size <= region.size - offset
            }
            guard initramfs.size > 0, covered else {
                throw .invalidDeviceTreeConfiguration(
                    reason: "the initramfs (\(initramfs.size) bytes at \(initramfs.start)) is not inside one RAM region")
            }
        }
        guard Set(config.pciSegments.map(\.id)).count == config.pciSegments.count else {
            throw .invalidDeviceTreeConfiguration(reason: "two PCI segments have the same id")
        }
        try validateNUMA(config)
    }

    static func validateNUMA(_ config: Configuration) throws(AArch64Error) {
        guard config.numaNodes.count > 1 else { return }
        func refuse(_ reason: String) -> AArch64Error { .invalidDeviceTreeConfiguration(reason: "NUMA: " + reason) }
        let ids = Set(config.numaNodes.map(\.id))
        guard ids.count == config.numaNodes.count else { throw refuse("two nodes have the same id") }
        var owner: [Int: UInt32] = [:]
        var ranges: [(start: UInt64, end: UInt64, node: UInt32)] = []
        for node in config.numaNodes {
            for vcpu in node.vcpus {
                guard config.mpidrs.indices.contains(vcpu) else {
                    throw refuse("node \(node.id) names vCPU \(vcpu), but there are \(config.mpidrs.count)")
                }
                if let other = owner.updateValue(node.id, forKey: vcpu) {
                    throw refuse("vCPU \(vcpu) is in nodes \(other) and \(node.id)")
                }
            }
            for (destination, distance) in node.distances {
                guard ids.contains(destination), destination != node.id else {
                    throw refuse("node \(node.id) gives a distance to \(destination == node.id ? "itself" : "node \(destination), which does not exist")")
                }
                guard distance > 10 else { throw refuse("node \(node.id)'s distance to node \(destination) is \(distance); other nodes are farther than 10") }
            }
            for range in node.memory {
                let inside = config.memory.contains { region in
                    range.start >= region.start && range.size > 0
                        && range.start.rawValue - region.start.rawValue <= region.size
                        && range.size <= region.size - (range.start.rawValue - region.start.rawValue)
                }
                guard inside else {
                    throw refuse("node \(node.id)'s memory (\(range.size) bytes at \(range.start)) is not inside one RAM region")
                }
                ranges.append((range.start.rawValue, range.start.rawValue + range.size, node.id))
            }
        }
        ranges.sort { $0.start < $1.start }
        for (left, right) in zip(ranges, ranges.dropFirst()) where right.start < left.end {
            throw refuse("nodes \(left.node) and \(right.node) share memory at 0x\(hexDigits(right.start))")
        }
        let described = ranges.reduce(UInt64(0)) { $0 + ($1.end - $1.start) }
        let total = config.memory.reduce(UInt64(0)) { $0 + $1.size }
        guard described == total else {
            throw refuse("the nodes hold \(described) bytes of the guest's \(total): every byte of RAM belongs to one node")
        }
    }

    /// The `distance-map` node (`numa-distance-map-v1`): a `<from to distance>` triple for
    /// every ordered pair of nodes, in ascending order.
    static func writeDistanceMap(_ fdt: inout FDTWriter, _ nodes: [NUMANode]) throws(AArch64Error) {
        var matrix: [UInt32] = []
        for from in nodes {
            for to in nodes {
                let distance = from.id == to.id ? 10 : (from.distances[to.id] ?? to.distances[from.id] ?? 20)
                matrix += [from.id, to.id, UInt32(distance)]
            }
        }
        try fdt.beginNode("distance-map")
        try fdt.property("compatible", string: "numa-distance-map-v1")
        try fdt.property("distance-matrix", cells: matrix)
        try fdt.endNode()
    }

    static func writeCPUs(_ fdt: inout FDTWriter, _ mpidrs: [UInt64], numa: [NUMANode]) throws(AArch64Error) {
        try fdt.beginNode("cpus")
        try fdt.property("#address-cells", u32: 1)
        try fdt.property("#size-cells", u32: 0)
        for (index, mpidr) in mpidrs.enumerated() {
            let reg = UInt32(mpidr & 0x7F_FFFF)
            try fdt.beginNode("cpu@\(hexDigits(reg))")
            try fdt.property("device_type", string: "cpu")
            try fdt.property("compatible", string: "arm,arm-v8")
            if mpidrs.count > 1 { try fdt.property("enable-method", string: "psci") }
            try fdt.property("reg", u32: reg)
            if let node = numa.first(where: { $0.vcpus.contains(index) }) {
                try fdt.property("numa-node-id", u32: node.id)
            }
            try fdt.phandle(Phandle.firstVCPU + UInt32(index))
            try fdt.endNode()
        }
        try fdt.endNode()
    }

    static func writeChosen(_ fdt: inout FDTWriter, _ config: Configuration) throws(AArch64Error) {
        try fdt.beginNode("chosen")
        try fdt.property("bootargs", string: config.commandLine)
        if let initramfs = config.initramfs {
            try fdt.property("linux,initrd-start", u64: initramfs.start.rawValue)
            try fdt.property("linux,initrd-end", u64: initramfs.start.rawValue + initramfs.size)
        }
        if let path = serialPath(config) { try fdt.property("stdout-path", string: path) }
        try fdt.endNode()
    }

    static func writeGIC(_ fdt: inout FDTWriter, vcpuCount: Int) throws(AArch64Error) {
        let redistributors = try AArch64Layout.gicRedistributorRegion(vcpuCount: vcpuCount)
        let its = try AArch64Layout.gicITSRegion(vcpuCount: vcpuCount)
        try fdt.beginNode("intc@\(hexDigits(AArch64Layout.gicDistributorStart.rawValue))")
        try fdt.property("compatible", string: "arm,gic-v3")
        try fdt.property("interrupt-controller")
        try fdt.property("#interrupt-cells", u32: 3)
        try fdt.property("reg", cells64: [AArch64Layout.gicDistributorStart.rawValue, AArch64Layout.gicDistributorSize,
                                          redistributors.start.rawValue, redistributors.size])
        try fdt.phandle(Phandle.gic)
        try fdt.property("#address-cells", u32: 2)
        try fdt.property("#size-cells", u32: 2)
        try fdt.property("ranges")
        try fdt.property("interrupts", cells: [irqTypePPI, gicMaintenancePPI, irqLevelHigh])
        try fdt.beginNode("msic@\(hexDigits(its.start.rawValue))")
        try fdt.property("compatible", string: "arm,gic-v3-its")
        try fdt.property("msi-controller")
        try fdt.phandle(Phandle.msi)
        try fdt.property("reg", cells64: [its.start.rawValue, its.size])
        try fdt.endNode()
        try fdt.endNode()
    }

    static func spi(_ device: PlatformDevice, _ type: UInt32) -> [UInt32] {
        [irqTypeSPI, device.irq - AArch64Layout.irqBase, type]
    }

    static func writeLegacyDevices(_ fdt: inout FDTWriter, _ config: Configuration) throws(AArch64Error) {
        if let serial = config.serial {
            try fdt.beginNode("pl011@\(hexDigits(serial.address.rawValue))")
            try fdt.property("compatible", strings: ["arm,pl011", "arm,primecell"])
            try fdt.property("reg", cells64: [serial.address.rawValue, serial.size])
            try fdt.property("clocks", u32: Phandle.clock)
            try fdt.property("clock-names", string: "apb_pclk")
            try fdt.property("interrupts", cells: spi(serial, irqEdgeRising))
            try fdt.endNode()
        }
        if let rtc = config.rtc {
            try fdt.beginNode("rtc@\(hexDigits(rtc.address.rawValue))")
            try fdt.property("compatible", strings: ["arm,pl031", "arm,primecell"])
            try fdt.property("reg", cells64: [rtc.address.rawValue, rtc.size])
            try fdt.property("interrupts", cells: spi(rtc, irqLevelHigh))
            try fdt.property("clocks", u32: Phandle.clock)
            try fdt.property("clock-names", string: "apb_pclk")
            try fdt.endNode()
        }
        if let gpio = config.gpio {
            try fdt.beginNode("pl061@\(hexDigits(gpio.address.rawValue))")
            try fdt.property("compatible", strings: ["arm,pl061", "arm,primecell"])
            try fdt.property("reg", cells64: [gpio.address.rawValue, gpio.size])
            try fdt.property("interrupts", cells: spi(gpio, irqLevelHigh))
            try fdt.property("gpio-controller")
            try fdt.property("#gpio-cells", u32: 2)
            try fdt.property("clocks", u32: Phandle.clock)
            try fdt.property("clock-names", string: "apb_pclk")
            try fdt.phandle(Phandle.gpio)
            try fdt.endNode()
            // Cloud Hypervisor nests gpio-keys in the PL061 node with a `button@1` that has no
            // `reg`; dtc warns about both, so the keys sit at the root with a plain name here.
            try fdt.beginNode("gpio-keys")
            try fdt.property("compatible", string: "gpio-keys")
            try fdt.beginNode("button-poweroff")
            try fdt.property("label", string: "GPIO Key Poweroff")
            try fdt.property("linux,code", u32: keyPower)
            try fdt.property("gpios", cells: [Phandle.gpio, powerButtonGPIO, 0])
            try fdt.endNode()
            try fdt.endNode()
        }
    }

    static func writePCI(_ fdt: inout FDTWriter, _ segment: PCISegment, segmentCount: Int) throws(AArch64Error) {
        // EDK2 wants the 64-bit window above 4 GiB: Cloud Hypervisor cuts it off below 8 GiB.
        var base64 = segment.mmio64Start.rawValue
        var size64 = segment.mmio64Size
        if base64 < AArch64Layout.pciHighBase.rawValue {
            let cut = AArch64Layout.pciHighBase.rawValue - base64
            guard size64 > cut else {
                throw .invalidDeviceTreeConfiguration(
                    reason: "PCI segment \(segment.id)'s 64-bit window ends below \(AArch64Layout.pciHighBase)")
            }
            base64 = AArch64Layout.pciHighBase.rawValue
            size64 -= cut
        }
        // The 32-bit window is shared out evenly between the segments, 4 KiB-aligned.
        let size32 = AArch64Layout.mem32BitDevicesSize / (4096 * UInt64(segmentCount)) * 4096
        let base32 = AArch64Layout.mem32BitDevicesStart.rawValue + size32 * UInt64(segment.id)
        func range(_ space: UInt32, _ pci: UInt64, _ cpu: UInt64, _ size: UInt64) -> [UInt32] {
            [space, UInt32(pci >> 32), UInt32(truncatingIfNeeded: pci), UInt32(cpu >> 32), UInt32(truncatingIfNeeded: cpu),
             UInt32(size >> 32), UInt32(truncatingIfNeeded: size)]
        }
        let ranges = range(0x0100_0000, 0, AArch64Layout.pciIOStart.rawValue, AArch64Layout.pciIOSize)
            + range(0x0200_0000, base32, base32, size32)
            + range(0x0300_0000, base64, base64, size64)
        try fdt.beginNode("pci@\(hexDigits(segment.ecamAddress.rawValue))")
        try fdt.property("compatible", string: "pci-host-ecam-generic")
        try fdt.property("device_type", string: "pci")
        try fdt.property("ranges", cells: ranges)
        try fdt.property("bus-range", cells: [0, 0])
        try fdt.property("linux,pci-domain", u32: UInt32(segment.id))
        try fdt.property("#address-cells", u32: 3)
        try fdt.property("#size-cells", u32: 2)
        try fdt.property("reg", cells64: [segment.ecamAddress.rawValue, AArch64Layout.pciMMConfigSizePerSegment])
        try fdt.property("#interrupt-cells", u32: 1)
        try fdt.property("dma-coherent")
        // Requester IDs 0..<256 of this segment map to ITS device IDs segment << 8 onward.
        try fdt.property("msi-map", cells: [0, Phandle.msi, UInt32(segment.id) << 8, 0x100])
        try fdt.property("msi-parent", u32: Phandle.msi)
        try fdt.endNode()
    }

    static func hexDigits<T: BinaryInteger>(_ value: T) -> String { String(value, radix: 16) }
}
