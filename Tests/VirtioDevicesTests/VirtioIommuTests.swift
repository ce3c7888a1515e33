import GuestMemory
import Testing
import VirtioDevices
import VirtioQueue

/// Hand-made virtio-iommu requests (head, body), little-endian.
enum IommuBytes {
    static func le(_ value: UInt64, _ count: Int) -> [UInt8] { (0..<count).map { UInt8(truncatingIfNeeded: value >> (8 * UInt64($0))) } }
    static func attach(domain: UInt32, endpoint: UInt32, flags: UInt32 = 0, reserved: UInt8 = 0) -> [UInt8] {
        [1, 0, 0, 0] + le(UInt64(domain), 4) + le(UInt64(endpoint), 4) + le(UInt64(flags), 4) + [reserved, 0, 0, 0]
    }
    static func detach(domain: UInt32, endpoint: UInt32) -> [UInt8] {
        [2, 0, 0, 0] + le(UInt64(domain), 4) + le(UInt64(endpoint), 4) + [UInt8](repeating: 0, count: 8)
    }
    static func map(domain: UInt32, first: UInt64, last: UInt64, gpa: UInt64, flags: UInt32 = 3) -> [UInt8] {
        [3, 0, 0, 0] + le(UInt64(domain), 4) + le(first, 8) + le(last, 8) + le(gpa, 8) + le(UInt64(flags), 4)
    }
    static func unmap(domain: UInt32, first: UInt64, last: UInt64) -> [UInt8] {
        [4, 0, 0, 0] + le(UInt64(domain), 4) + le(first, 8) + le(last, 8) + [0, 0, 0, 0]
    }
    static func probe(endpoint: UInt32) -> [UInt8] { [5, 0, 0, 0] + le(UInt64(endpoint), 4) + [UInt8](repeating: 0, count: 64) }
}

@Suite struct IommuRequestTests {
    let limits = IommuRequest.Limits(msiRange: 0xfee0_0000...0xfeef_ffff, inputRange: nil)

    func apply(_ request: [UInt8], _ table: inout IommuTable, limits: IommuRequest.Limits? = nil) -> IommuRequest.Status {
        IommuRequest.apply(request, to: &table, limits: limits ?? self.limits).status
    }

    @Test("ATTACH, MAP and translate; UNMAP removes; DETACH of the last endpoint drops the domain")
    func lifecycle() {
        var table = IommuTable()
        #expect(apply(IommuBytes.attach(domain: 1, endpoint: 0x10), &table) == .ok)
        #expect(table.endpoints == [0x10: 1] && table.domains[1]?.bypass == false)
        #expect(table.translate(endpoint: 0x10, address: 0x1000, length: 1) == nil)
        #expect(apply(IommuBytes.map(domain: 1, first: 0x10_0000, last: 0x10_ffff, gpa: 0x4000_0000), &table) == .ok)
        #expect(table.translate(endpoint: 0x10, address: 0x10_0010, length: 0x100) == 0x4000_0010)
        #expect(table.translate(endpoint: 0x10, address: 0x10_fff0, length: 0x20) == nil)
        // Unattached endpoints bypass until the driver turns bypass off.
        #expect(table.translate(endpoint: 0x18, address: 0x1234, length: 4) == 0x1234)
        table.bypass = false
        #expect(table.translate(endpoint: 0x18, address: 0x1234, length: 4) == nil)
        #expect(apply(IommuBytes.unmap(domain: 1, first: 0x10_0000, last: 0x10_ffff), &table) == .ok)
        #expect(table.translate(endpoint: 0x10, address: 0x10_0010, length: 1) == nil)
        #expect(apply(IommuBytes.detach(domain: 1, endpoint: 0x10), &table) == .ok)
        #expect(table.endpoints.isEmpty && table.domains.isEmpty)
    }

    @Test("adjacent mappings contiguous in both spaces translate as one range; a gap in either does not")
    func contiguity() {
        var table = IommuTable()
        _ = apply(IommuBytes.attach(domain: 2, endpoint: 8), &table)
        #expect(apply(IommuBytes.map(domain: 2, first: 0x1_0000, last: 0x1_0fff, gpa: 0x8_0000), &table) == .ok)
        #expect(apply(IommuBytes.map(domain: 2, first: 0x1_1000, last: 0x1_1fff, gpa: 0x8_1000), &table) == .ok)
        #expect(apply(IommuBytes.map(domain: 2, first: 0x1_2000, last: 0x1_2fff, gpa: 0x9_0000), &table) == .ok)
        #expect(table.translate(endpoint: 8, address: 0x1_0800, length: 0x1000) == 0x8_0800)
        #expect(table.translate(endpoint: 8, address: 0x1_1800, length: 0x1000) == nil)
        #expect(table.translate(endpoint: 8, address: 0x1_2000, length: 0x1000) == 0x9_0000)
        #expect(table.translate(endpoint: 8, address: UInt64.max, length: 2) == nil)
        #expect(table.translate(endpoint: 8, address: 0x1_0000, length: 0) == nil)
    }

    @Test("a bypass domain passes addresses through and refuses MAP and UNMAP; re-attaching moves the endpoint")
    func bypassDomain() {
        var table = IommuTable()
        #expect(apply(IommuBytes.attach(domain: 3, endpoint: 8, flags: 1), &table) == .ok)
        table.bypass = false
        #expect(table.translate(endpoint: 8, address: 0xdead_0000, length: 16) == 0xdead_0000)
        #expect(apply(IommuBytes.map(domain: 3, first: 0, last: 0xfff, gpa: 0), &table) == .invalid)
        #expect(apply(IommuBytes.unmap(domain: 3, first: 0, last: 0xfff), &table) == .invalid)
        // The same domain asked without bypass: INVAL.
        #expect(apply(IommuBytes.attach(domain: 3, endpoint: 16), &table) == .invalid)
        // Moving endpoint 8 to domain 4 drops domain 3, now empty.
        #expect(apply(IommuBytes.attach(domain: 4, endpoint: 8), &table) == .ok)
        #expect(table.endpoints == [8: 4] && table.domains.keys.sorted() == [4])
    }

    @Test("hostile requests get INVAL, RANGE, NOENT or UNSUPP and change nothing")
    func hostile() {
        var table = IommuTable()
        _ = apply(IommuBytes.attach(domain: 1, endpoint: 8), &table)
        _ = apply(IommuBytes.map(domain: 1, first: 0x10_0000, last: 0x10_ffff, gpa: 0x4000_0000), &table)
        let before = table
        let cases: [([UInt8], IommuRequest.Status)] = [
            ([], .invalid),
            ([1, 0], .invalid),
            ([9, 0, 0, 0], .unsupported),
            (Array(IommuBytes.attach(domain: 1, endpoint: 8).dropLast()), .invalid),
            (IommuBytes.attach(domain: 1, endpoint: 8) + [0], .invalid),
            (IommuBytes.attach(domain: 5, endpoint: 8, reserved: 1), .invalid),
            (IommuBytes.attach(domain: 5, endpoint: 8, flags: 2), .invalid),
            (IommuBytes.detach(domain: 7, endpoint: 8), .invalid),
            (IommuBytes.map(domain: 9, first: 0, last: 0xfff, gpa: 0), .noEntry),
            (IommuBytes.map(domain: 1, first: 0x20_0000, last: 0x20_0fff, gpa: 0, flags: 8), .invalid),
            (IommuBytes.map(domain: 1, first: 0x20_0800, last: 0x20_17ff, gpa: 0), .range),
            (IommuBytes.map(domain: 1, first: 0x20_0000, last: 0x20_0fff, gpa: 0x800), .range),
            (IommuBytes.map(domain: 1, first: 0x20_0000, last: 0x20_07ff, gpa: 0), .range),
            (IommuBytes.map(domain: 1, first: 0x20_0000, last: 0x1f_ffff, gpa: 0), .range),
            (IommuBytes.map(domain: 1, first: 0, last: UInt64.max, gpa: 0), .range),
            (IommuBytes.map(domain: 1, first: 0x20_0000, last: 0x20_0fff, gpa: UInt64.max - 0xfff), .range),
            (IommuBytes.map(domain: 1, first: 0x10_f000, last: 0x11_0fff, gpa: 0), .invalid),
            (IommuBytes.map(domain: 1, first: 0xf_f000, last: 0x10_0fff, gpa: 0), .invalid),
            (IommuBytes.unmap(domain: 1, first: 0x10_0000, last: 0x10_0fff), .range),
            (IommuBytes.unmap(domain: 9, first: 0, last: 0xfff), .noEntry),
            (IommuBytes.unmap(domain: 1, first: 0x2000, last: 0x1000), .range),
            (IommuBytes.probe(endpoint: 8) + [0], .invalid),
        ]
        for (request, status) in cases {
            #expect(apply(request, &table) == status, "\(request)")
            #expect(table == before, "\(request)")
        }
        // UNMAP of a range that holds nothing is fine.
        #expect(apply(IommuBytes.unmap(domain: 1, first: 0x50_0000, last: 0x50_ffff), &table) == .ok)
    }

    @Test("an address width under 64 bits limits MAP and UNMAP to the input range")
    func inputRange() {
        var table = IommuTable()
        let narrow = IommuRequest.Limits(msiRange: 0xfee0_0000...0xfeef_ffff, inputRange: 0...0xffff_ffff)
        _ = apply(IommuBytes.attach(domain: 1, endpoint: 8), &table, limits: narrow)
        #expect(apply(IommuBytes.map(domain: 1, first: 0xffff_f000, last: 0xffff_ffff, gpa: 0), &table, limits: narrow) == .ok)
        #expect(apply(IommuBytes.map(domain: 1, first: 0x1_0000_0000, last: 0x1_0000_0fff, gpa: 0), &table, limits: narrow) == .range)
        #expect(apply(IommuBytes.unmap(domain: 1, first: 0, last: 0x1_0000_0000), &table, limits: narrow) == .range)
    }

    @Test("PROBE answers one RESV_MEM property: the MSI doorbell range")
    func probe() {
        var table = IommuTable()
        let answer = IommuRequest.apply(IommuBytes.probe(endpoint: 8), to: &table, limits: limits)
        #expect(answer.status == .ok)
        #expect(answer.bytes == [1, 0, 20, 0, 1, 0, 0, 0] + IommuBytes.le(0xfee0_0000, 8) + IommuBytes.le(0xfeef_ffff, 8) + [0, 0, 0, 0])
        #expect(answer.properties.count == IommuRequest.probeSize)
    }
}

@Suite struct VirtioIommuDeviceTests {
    static let msi: ClosedRange<UInt64> = 0xfee0_0000...0xfeef_ffff

    @Test("features, queues and configuration space as Cloud Hypervisor's; only bypass is writable")
    func configuration() throws {
        let device = VirtioIommu(msiRange: Self.msi)
        #expect(device.deviceType.rawValue == 23 && device.queueMaxSizes == [256, 256])
        #expect(device.features == (1 << 2) | (1 << 4) | (1 << 6))
        #expect(device.readConfig(offset: 0, size: 8) == 0x20_1000)
        #expect(device.readConfig(offset: 8, size: 8) == 0 && device.readConfig(offset: 16, size: 8) == 0)
        #expect(device.readConfig(offset: 32, size: 4) == 24 && device.readConfig(offset: 36, size: 1) == 0)
        device.writeConfig(offset: 0, size: 8, value: 0)
        #expect(device.readConfig(offset: 0, size: 8) == 0x20_1000)
        // Bypass is recorded but applies only once BYPASS_CONFIG was accepted.
        device.writeConfig(offset: 36, size: 1, value: 0)
        #expect(device.readConfig(offset: 36, size: 1) == 0 && device.mapping.snapshot.bypass)
        device.acknowledgeFeatures(VirtioFeature.version1 | VirtioIommu.bypassConfigFeature)
        device.writeConfig(offset: 36, size: 1, value: 0xfe)
        #expect(!device.mapping.snapshot.bypass && device.readConfig(offset: 36, size: 1) == 0)
        device.writeConfig(offset: 36, size: 1, value: 1)
        #expect(device.mapping.snapshot.bypass && device.readConfig(offset: 36, size: 1) == 1)
        let narrow = VirtioIommu(msiRange: Self.msi, addressWidthBits: 48)
        #expect(narrow.features & VirtioIommu.inputRangeFeature != 0)
        #expect(narrow.readConfig(offset: 16, size: 8) == (1 << 48) - 1)
    }

    /// Puts a request (readable at 0x10000) and room for the answer (writable at 0x11000) on queue 0.
    func send(_ driver: inout Driver, _ request: [UInt8], head: UInt16, room: UInt32 = 4) throws -> (length: UInt32, answer: [UInt8]) {
        let base = Layout.buffers + UInt64(head) * 0x2000
        try driver.memory.write(bytes: request, at: GuestAddress(base))
        try driver.putDescriptor(head, address: base, length: UInt32(request.count), flags: 1, next: head + 1)
        try driver.putDescriptor(head + 1, address: base + 0x1000, length: room, flags: 2)
        try driver.makeAvailable(head)
        driver.notify()
        let used = try driver.usedEntry(Int(driver.availableIndex) - 1)
        #expect(used.id == UInt32(head))
        return (used.length, try driver.memory.readBytes(count: Int(used.length), at: GuestAddress(base + 0x1000)))
    }

    @Test("requests through the request queue: statuses written to the device-writable part, PROBE's property before the tail")
    func throughTheQueue() throws {
        let device = VirtioIommu(msiRange: Self.msi)
        var driver = try Driver(device: device)
        driver.bringUp()
        #expect(driver.transport.isActivated)
        #expect(try send(&driver, IommuBytes.attach(domain: 1, endpoint: 0x18), head: 0) == (4, [0, 0, 0, 0]))
        #expect(try send(&driver, IommuBytes.map(domain: 1, first: 0x1000, last: 0x1fff, gpa: 0x5000), head: 2) == (4, [0, 0, 0, 0]))
        #expect(device.mapping.endpoint(0x18).translate(0x1800, length: 8) == 0x5800)
        #expect(try send(&driver, IommuBytes.map(domain: 2, first: 0x1000, last: 0x1fff, gpa: 0x5000), head: 4) == (4, [6, 0, 0, 0]))
        #expect(try send(&driver, [0x42, 0, 0, 0], head: 6) == (4, [2, 0, 0, 0]))
        let probe = try send(&driver, IommuBytes.probe(endpoint: 0x18), head: 8, room: 28)
        #expect(probe.length == 28 && probe.answer.prefix(4) == [1, 0, 20, 0] && probe.answer.suffix(4) == [0, 0, 0, 0])
        // Too little room for the answer: nothing is applied, the chain comes back empty.
        #expect(try send(&driver, IommuBytes.detach(domain: 1, endpoint: 0x18), head: 10, room: 3).length == 0)
        #expect(device.mapping.snapshot.endpoints == [0x18: 1])
        // A request with no room at all: the same, and the queue goes on.
        #expect(try send(&driver, IommuBytes.detach(domain: 1, endpoint: 0x18), head: 12, room: 4) == (4, [0, 0, 0, 0]))
        #expect(driver.status & VirtioStatus.deviceNeedsReset == 0)
        #expect(device.mapping.snapshot.endpoints.isEmpty)
    }

    @Test("a device behind the IOMMU offers ACCESS_PLATFORM, reaches its rings and buffers through the endpoint's mappings, and an unmapped buffer breaks only that device")
    func endpointBehindIommu() throws {
        let mapping = IommuMapping()
        let iommu = VirtioIommu(mapping: mapping, msiRange: Self.msi)
        var control = try Driver(device: iommu)
        control.bringUp()
        // The rng's rings sit at IOVA 0x40000000 + their guest physical address; its buffer page too.
        let endpoint: UInt32 = 3 << 3
        _ = try send(&control, IommuBytes.attach(domain: 7, endpoint: endpoint), head: 0)
        _ = try send(&control, IommuBytes.map(domain: 7, first: 0x4000_1000, last: 0x4000_3fff, gpa: 0x1000), head: 2)
        _ = try send(&control, IommuBytes.map(domain: 7, first: 0x4001_0000, last: 0x4001_0fff, gpa: 0x2_0000), head: 4)
        let rng = VirtioRng(source: CountingEntropy())
        var driver = try Driver(device: rng, translator: mapping.endpoint(endpoint))
        #expect(driver.transport.offeredFeatures & VirtioFeature.accessPlatform != 0)
        driver.enableMSIX()
        driver.negotiate(VirtioFeature.version1 | VirtioFeature.accessPlatform)
        driver.write(VirtioCommonConfig.msixConfig, size: 2, 0)
        typealias C = VirtioCommonConfig
        driver.write(C.queueSelect, size: 2, 0)
        driver.write(C.queueSize, size: 2, UInt64(Layout.queueSize))
        driver.write(C.queueMSIXVector, size: 2, 1)
        driver.write(C.queueDescriptor, size: 8, 0x4000_1000)
        driver.write(C.queueDriver, size: 8, 0x4000_2000)
        driver.write(C.queueDevice, size: 8, 0x4000_3000)
        driver.write(C.queueEnable, size: 2, 1)
        driver.setStatus(VirtioStatus.acknowledge | VirtioStatus.driver | VirtioStatus.featuresOK | VirtioStatus.driverOK)
        #expect(driver.transport.isActivated)
        try driver.putDescriptor(0, address: 0x4001_0010, length: 8, flags: 2)
        try driver.makeAvailable(0)
        driver.notify()
        #expect(try driver.memory.readBytes(count: 8, at: GuestAddress(0x2_0010)) == (0..<8).map { UInt8($0) })
        #expect(try driver.usedEntry(0).length == 8)
        // The guest physical address itself is not mapped for this endpoint: the device needs a reset.
        try driver.putDescriptor(1, address: 0x2_0010, length: 8, flags: 2)
        try driver.makeAvailable(1)
        driver.notify()
        #expect(driver.status & VirtioStatus.deviceNeedsReset != 0)
        #expect(control.status & VirtioStatus.deviceNeedsReset == 0)
    }
}
